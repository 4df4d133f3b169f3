"""Converting published GoT data: chain rewriting by kind, every source shape, rejects, resume without duplicates."""

import io
import json
import tarfile
from collections import Counter

import pytest
from PIL import Image

from gotr1.chain import parse_chain
from gotr1.train import convert as convert_module
from gotr1.train.convert import FORMATS, convert
from gotr1.train.data import GoTDataset
from gotr1.train.got_convert import ChainRejected, convert_chain

# ---------------------------------------------------------------------------------------------
# convert_chain
# ---------------------------------------------------------------------------------------------

CHAIN_CASES = [
    pytest.param(
        "A <|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(350,450)<|box_end|> (red) beside "
        "<|object_ref_start|>a dog<|object_ref_end|><|box_start|>(500,200),(900,1100)<|box_end|> (blue).",
        None,
        "A <|obj_start|>cat<|obj_end|> <|box_start|>(100,200),(350,450)<|box_end|> beside "
        "<|obj_start|>a dog<|obj_end|> <|box_start|>(500,200),(900,1000)<|box_end|>.",
        {"qwen_tags": 2, "colour_dropped": 2, "clamped": 1},
        id="object_ref+colour+clamp",
    ),
    pytest.param(
        "On the left, a small dog <|box_start|>(600,700),(100,50)<|box_end|> (green) and a tree"
        "<|box_start|>( 1, 2 ), ( 3 , 4 )<|box_end|> (yellow)",
        None,
        "On the left, <|obj_start|>a small dog<|obj_end|> <|box_start|>(100,50),(600,700)<|box_end|> and "
        "<|obj_start|>a tree<|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|>",
        {"name_inferred": 2, "colour_dropped": 2, "corners_swapped": 1, "box_reformatted": 1},
        id="words-before-box+swap",
    ),
    pytest.param(
        "Turn the <|object_ref_start|>apple<|object_ref_end|><|box_start|><box_0><|box_end|> into a pear <box_1>.",
        '{"<box_0>": [[10,20],[300,400]], "<box_1>": "(5,6),(70,80.4)"}',
        "Turn the <|obj_start|>apple<|obj_end|> <|box_start|>(10,20),(300,400)<|box_end|> into "
        "<|obj_start|>a pear<|obj_end|> <|box_start|>(5,6),(70,80)<|box_end|>.",
        {"placeholder_substituted": 2, "qwen_tags": 1, "name_inferred": 1, "rounded": 1},
        id="placeholders",
    ),
    pytest.param(
        "<|obj_start|>cat<|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|> on a mat",
        None,
        "<|obj_start|>cat<|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|> on a mat",
        {},
        id="gotr1-passthrough",
    ),
    pytest.param(
        "<| obj_start |>cat<| obj_end |> <|box_start|>(-5,2),(3,1004)<|box_end|>",
        None,
        "<|obj_start|>cat<|obj_end|> <|box_start|>(0,2),(3,1000)<|box_end|>",
        {"tags_normalized": 2, "clamped": 2},
        id="gotr1-spaced-tags+clamp",
    ),
]


@pytest.mark.parametrize("text, coords, expected, repairs", CHAIN_CASES)
def test_convert_chain(text, coords, expected, repairs):
    chain, counted = convert_chain(text, coords)
    assert chain == expected
    assert counted == Counter(repairs), f"repairs of {text!r}"
    assert parse_chain(chain, strict=True).objects, "converted chains parse strictly"
    assert convert_chain(chain) == (chain, Counter()), "converting again changes nothing"


@pytest.mark.parametrize("text, coords, reason", [
    ("", None, "no chain"),
    (None, None, "no chain"),
    ("a plain caption", None, "chain has no objects"),
    ("<|box_start|>(1,2),(3,4)<|box_end|>", None, "box without a name"),
    ("cat <|box_start|>(1,2)<|box_end|>", None, "malformed box"),
    ("cat <|box_start|>(1,2),(3,4)", None, "unparsable chain"),
    ("cat <box_0>", "{not json", "bad coord"),
    ("cat <box_0>", {"<box_0>": [1, 2, 3]}, "bad coord"),
    ("cat <|box_start|>(100,100),(100,100)<|box_end|>", None, "degenerate box"),
    ("cat <|box_start|>(100,200),(400,200.4)<|box_end|>", None, "degenerate box"),  # zero height once rounded
    ("cat <|box_start|>(1000,5),(1200,90)<|box_end|>", None, "degenerate box"),  # zero width once clamped
    ("cat <box_0>", {"<box_0>": [7, 7, 7, 9]}, "degenerate box"),
])
def test_convert_chain_rejects(text, coords, reason):
    with pytest.raises(ChainRejected) as info:
        convert_chain(text, coords)
    assert info.value.reason == reason


# ---------------------------------------------------------------------------------------------
# Fixtures: one small image, sources in each shape
# ---------------------------------------------------------------------------------------------

QWEN = "A <|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(350,450)<|box_end|> (red)"
QWEN_OUT = "A <|obj_start|>cat<|obj_end|> <|box_start|>(100,200),(350,450)<|box_end|>"
GOTR1 = "<|obj_start|>dog<|obj_end|> <|box_start|>(0,0),(500,500)<|box_end|> runs"


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def got_source(tmp_path):
    """A GoT-form JSONL with a good, a repaired and a broken record of every kind."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes())
    (src / "b.png").write_bytes(png_bytes((0, 90, 0)))
    (src / "bad.png").write_bytes(b"not an image")
    return write_jsonl(src / "got.jsonl", [
        {"prompt": "a cat", "got": QWEN, "image": "a.png"},  # line 1: good
        {"prompt": "two", "got": "a dog <|box_start|>(900,-3),(20,1200)<|box_end|> (blue)", "image": "b.png"},
        {"got": QWEN, "image": "a.png"},  # line 3: no prompt
        {"prompt": "x", "got": QWEN},  # line 4: no image
        {"prompt": "x", "got": QWEN, "image": "missing.png"},  # line 5: image file missing
        {"prompt": "x", "got": QWEN, "image": "bad.png"},  # line 6: unreadable image
        {"prompt": "x", "got": "cat <|box_start|>(1,2)<|box_end|>", "image": "a.png"},  # line 7: malformed box
        "{broken json",  # line 8
        {"prompt": "plain", "got": "a caption without boxes", "image": "a.png"},  # line 9: no objects
        {"prompt": "flat", "got": "a cat <|box_start|>(100,100),(100,100)<|box_end|>", "image": "a.png"},  # 10
    ])


def rows_of(out_dir):
    rows = []
    for shard in sorted(out_dir.glob("shard-*.jsonl")):
        rows += [json.loads(line) for line in shard.read_text().splitlines()]
    return rows


def check_loads(out_dir):
    """Every shard loads with GoTDataset and each chain parses strictly."""
    for shard in sorted(out_dir.glob("shard-*.jsonl")):
        dataset = GoTDataset(shard)
        for i in range(len(dataset)):
            row = dataset[i]
            assert parse_chain(row.chain, strict=True).objects
            assert row.load_image().size == (8, 6)


# ---------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------


def test_convert_got_jsonl(got_source, tmp_path):
    out = tmp_path / "out"
    summary = convert([got_source], out, source_format="got", progress=False)
    rows = rows_of(out)
    assert [(r["prompt"], r["chain"]) for r in rows] == [
        ("a cat", QWEN_OUT),
        ("two", "<|obj_start|>a dog<|obj_end|> <|box_start|>(20,0),(900,1000)<|box_end|>"),
    ]
    assert all((out / r["image"]).is_file() for r in rows)
    assert (out / rows[0]["image"]).read_bytes() == (got_source.parent / "a.png").read_bytes()
    assert summary["records_in"] == 10 and summary["written"] == 2 and summary["repaired_records"] == 2
    assert summary["repairs"] == {"qwen_tags": 1, "colour_dropped": 2, "name_inferred": 1, "clamped": 2,
                                  "corners_swapped": 1}
    rejected = {reason: entry["count"] for reason, entry in summary["rejected"].items()}
    assert rejected == {"no prompt": 1, "no image": 1, "image file missing": 1, "unreadable image": 1,
                        "malformed box": 1, "bad record": 1, "chain has no objects": 1, "degenerate box": 1}
    where = {reason: [e["at"] for e in entry["examples"]] for reason, entry in summary["rejected"].items()}
    assert where["no prompt"] == [f"{got_source}:3"]
    assert where["unreadable image"] == [f"{got_source}:6"]
    assert where["degenerate box"] == [f"{got_source}:10"]
    assert json.loads((out / "summary.json").read_text()) == summary
    check_loads(out)


def test_convert_got_coord_and_json_array(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    records = [
        {"caption": "edit", "got": "the apple <box_0> left of the pear <box_1>", "coord": json.dumps(
            {"<box_0>": [[10, 20], [300, 400]], "<box_1>": [500, 20, 1300, 400]}), "image": "a.png"},
        {"caption": "no coords", "got": "the apple <box_0>", "image": "a.png"},
    ]
    source = tmp_path / "omni.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "out"
    summary = convert(source, out, source_format="got-coord", progress=False)
    assert [r["chain"] for r in rows_of(out)] == [
        "<|obj_start|>the apple<|obj_end|> <|box_start|>(10,20),(300,400)<|box_end|> left of "
        "<|obj_start|>the pear<|obj_end|> <|box_start|>(500,20),(1000,400)<|box_end|>"]
    assert summary["repairs"] == {"placeholder_substituted": 2, "name_inferred": 2, "clamped": 1}
    assert summary["rejected"]["no coord"]["examples"][0]["at"] == f"{source}#1"
    check_loads(out)


def test_convert_jsonl_with_field_options_passes_gotr1_through(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    source = write_jsonl(tmp_path / "rows.jsonl", [
        {"text": "p1", "reasoning": GOTR1, "file": "a.png"},
        {"text": "p2", "reasoning": QWEN, "file": "a.png"},
    ])
    out = tmp_path / "out"
    summary = convert([source], out, source_format="jsonl", prompt_field="text", chain_field="reasoning",
                      image_field="file", progress=False)
    assert [(r["prompt"], r["chain"]) for r in rows_of(out)] == [("p1", GOTR1), ("p2", QWEN_OUT)]
    assert summary["repaired_records"] == 1
    check_loads(out)


def test_convert_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({
        "prompt": ["cat", "broken", None],
        "got": [QWEN, "a dog <|box_start|>(1,2),(3,4)<|box_end|> (red) <|box_start|>(9,9)", QWEN],
        "image": [{"bytes": png_bytes(), "path": "x.png"}, {"bytes": png_bytes(), "path": "y.png"},
                  {"bytes": png_bytes(), "path": "z.png"}],
    })
    source = tmp_path / "train-0.parquet"
    pq.write_table(table, source)
    out = tmp_path / "out"
    summary = convert([source], out, source_format="parquet", progress=False)
    assert [(r["prompt"], r["chain"]) for r in rows_of(out)] == [("cat", QWEN_OUT)]
    assert summary["rejected"]["unparsable chain"]["examples"][0]["at"] == f"{source}#1"
    assert summary["rejected"]["no prompt"]["examples"][0]["at"] == f"{source}#2"
    check_loads(out)


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_convert_webdataset(tmp_path):
    meta = lambda **kw: json.dumps(kw).encode()  # noqa: E731
    source = write_tar(tmp_path / "shard-000.tar", [
        ("000001.jpg", png_bytes()), ("000001.json", meta(prompt="cat", got=QWEN)),
        ("000002.json", meta(prompt="no image", got=QWEN)),
        ("000003.png", b"garbage"), ("000003.json", meta(prompt="bad", got=QWEN)),
        ("000004.png", png_bytes()), ("000004.json", meta(got=QWEN)), ("000004.txt", b"caption from txt"),
    ])
    out = tmp_path / "out"
    summary = convert([source], out, source_format="webdataset", progress=False)
    assert [(r["prompt"], r["chain"]) for r in rows_of(out)] == [("cat", QWEN_OUT), ("caption from txt", QWEN_OUT)]
    assert summary["rejected"]["no image"]["examples"][0]["at"] == f"{source}#000002"
    assert summary["rejected"]["unreadable image"]["examples"][0]["at"] == f"{source}#000003"
    check_loads(out)


# ---------------------------------------------------------------------------------------------
# Resume and idempotence
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def many_sources(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    sources = []
    for s in range(2):
        records = [{"prompt": f"p{s}-{i}", "got": QWEN, "image": "a.png"} for i in range(7)]
        records.insert(3, {"prompt": f"bad{s}", "got": QWEN})  # a reject inside each file
        sources.append(write_jsonl(tmp_path / f"part{s}.jsonl", records))
    return sources


def test_killed_conversion_resumes_without_duplicates(many_sources, tmp_path, monkeypatch):
    reference = convert(many_sources, tmp_path / "ref", source_format="got", shard_size=3, progress=False)
    out = tmp_path / "out"
    original = convert_module.ShardWriter.write
    calls = {"n": 0}

    def dying_write(self, row):
        calls["n"] += 1
        if calls["n"] > 8:
            raise KeyboardInterrupt("killed")
        original(self, row)

    monkeypatch.setattr(convert_module.ShardWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        convert(many_sources, out, source_format="got", shard_size=3, progress=False)
    assert sorted(p.name for p in out.glob("shard-*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    monkeypatch.setattr(convert_module.ShardWriter, "write", original)
    with pytest.raises(ValueError, match=rf"{out} already holds a run .*--resume"):
        convert(many_sources, out, source_format="got", shard_size=3, progress=False)
    summary = convert(many_sources, out, source_format="got", shard_size=3, progress=False, resume=True)

    rows = rows_of(out)
    assert [r["prompt"] for r in rows] == [f"p{s}-{i}" for s in range(2) for i in range(7)]
    assert rows == rows_of(tmp_path / "ref")
    assert summary["records_in"] == 16 and summary["written"] == 14
    assert summary["rejected"]["no image"]["count"] == 2
    assert {k: v for k, v in summary.items() if k != "sources"} == \
        {k: v for k, v in reference.items() if k != "sources"}
    assert not list(out.glob("**/*.partial"))
    check_loads(out)

    again = convert(many_sources, out, source_format="got", shard_size=3, progress=False, resume=True)
    assert again == summary and rows_of(out) == rows, "a rerun of a finished conversion changes nothing"


def test_images_named_stably(many_sources, tmp_path):
    convert(many_sources, tmp_path / "one", source_format="got", progress=False)
    convert(many_sources, tmp_path / "two", source_format="got", progress=False)
    assert rows_of(tmp_path / "one") == rows_of(tmp_path / "two")
    assert len({r["image"] for r in rows_of(tmp_path / "one")}) == 14, "one image per record"


def test_convert_rejects_bad_arguments(many_sources, tmp_path):
    with pytest.raises(ValueError, match="source_format"):
        convert(many_sources, tmp_path / "o", source_format="csv")
    with pytest.raises(FileNotFoundError):
        convert([tmp_path / "nope.jsonl"], tmp_path / "o", source_format="got")
    convert(many_sources[:1], tmp_path / "o", source_format="got", progress=False)
    with pytest.raises(ValueError, match="other sources"):
        convert(many_sources, tmp_path / "o", source_format="got", progress=False, resume=True)
    assert FORMATS == ("got", "got-coord", "jsonl", "parquet", "webdataset")


def test_gotr1_data_convert_command_is_idempotent(got_source, tmp_path, capsys):
    from gotr1.cli.commands import main

    out = tmp_path / "cli"
    args = ["data", "convert", "--from", "got", str(got_source), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "10 records in, 2 written" in capsys.readouterr().out
    rows = rows_of(out)
    assert main(args) == 2 and f"{out} already holds a run" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0 and rows_of(out) == rows, "a rerun writes nothing twice"
    assert main(["data", "convert", "--from", "got", str(tmp_path / "nowhere.jsonl"), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
