"""GoT data files and the synthetic generator: validation, lazy rows, drawn images that match their chains."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from gotr1.chain import parse_chain
from gotr1.demo.synthetic import (
    COLORS,
    compbench_sample,
    draw_sample,
    read_compbench_prompts,
    synthetic_samples,
    write_synthetic_dataset,
)
from gotr1.rewards import LayoutRuleReward
from gotr1.rewards.rules import read_prompt
from gotr1.train.data import GoTDataError, GoTDataset

COMPBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "t2i-compbench"


def test_synthetic_dataset_round_trips_through_the_loader(tmp_path):
    path = write_synthetic_dataset(tmp_path, num_samples=12, image_size=32, seed=3)
    dataset = GoTDataset(path)
    assert len(dataset) == 12 and dataset.skipped == []
    row = dataset[5]
    assert row.line == 6
    assert parse_chain(row.chain, strict=True).objects
    assert row.load_image().size == (32, 32)


def test_synthetic_generation_is_seeded():
    assert synthetic_samples(6, seed=1) == synthetic_samples(6, seed=1)
    assert synthetic_samples(6, seed=1) != synthetic_samples(6, seed=2)
    with pytest.raises(ValueError, match="num_samples"):
        synthetic_samples(0)


@pytest.mark.parametrize("grid", [None, 4])
def test_samples_place_boxes_as_the_prompt_says(grid):
    """Every check of the layout rule passes on clean data, free or on a grid, for all prompt families."""
    samples = synthetic_samples(300, seed=0, grid=grid)
    scores, _ = LayoutRuleReward(strict=True)([s.prompt for s in samples], [s.chain for s in samples])
    assert scores.tolist() == [1.0] * len(samples), [s.prompt for s, ok in zip(samples, scores) if ok != 1.0]


def test_grid_boxes_cover_whole_cells():
    for sample in synthetic_samples(100, seed=1, grid=4):
        for obj in sample.objects:
            corners = obj.box.as_tuple()
            assert all(c % 250 == 0 for c in corners) and obj.box.x2 > obj.box.x1 and obj.box.y2 > obj.box.y1, sample


def test_relation_noise_breaks_that_share_of_relations_and_nothing_else():
    def strict_scores(noise):
        samples = synthetic_samples(600, seed=2, grid=4, relation_noise=noise)
        scores, _ = LayoutRuleReward(strict=True)([s.prompt for s in samples], [s.chain for s in samples])
        has_relation = np.array([bool(read_prompt(s.prompt)[1]) for s in samples])
        return scores, has_relation

    scores, has_relation = strict_scores(1.0)
    assert has_relation.sum() > 200
    assert (scores[has_relation] == 0).all() and (scores[~has_relation] == 1).all()
    scores, has_relation = strict_scores(0.5)
    assert 0.4 < 1 - scores[has_relation].mean() < 0.6  # about half of the relations are broken
    with pytest.raises(ValueError, match="relation_noise"):
        synthetic_samples(2, relation_noise=1.5)
    with pytest.raises(ValueError, match="grid"):
        synthetic_samples(2, grid=1)


def test_drawn_image_shows_each_colour_inside_its_box():
    for sample in synthetic_samples(20, seed=4):
        image = np.asarray(draw_sample(sample, 64)).astype(int)
        for obj, color in zip(sample.objects, sample.colors):
            x1, y1, x2, y2 = obj.box.to_pixels(64, 64)
            centre = image[(y1 + y2) // 2, (x1 + x2) // 2]
            # Shapes overlap only in conjunction rows' gaps, never at a box centre of their own.
            assert np.abs(centre - np.array(color)).max() <= 1, (sample.prompt, obj)


@pytest.mark.skipif(not COMPBENCH.is_dir(), reason="T2I-CompBench prompt lists not beside the checkout")
def test_compbench_prompts_become_samples_when_drawable():
    prompts = read_compbench_prompts([COMPBENCH / "color_val.txt", COMPBENCH / "spatial_val.txt"])
    rng = random.Random(0)
    samples = [s for s in (compbench_sample(p, rng) for p in prompts) if s is not None]
    assert len(samples) > len(prompts) // 2
    for sample in samples:
        assert len(parse_chain(sample.chain, strict=True).objects) == 2
    sample = compbench_sample("a green bench and a red car", rng)
    assert sample.colors == (COLORS["green"], COLORS["red"])
    assert compbench_sample("a gold clock and a red car", rng) is None
    assert compbench_sample("A dog is walking on a leash with its owner.", rng) is None


def _write_rows(tmp_path, rows):
    (tmp_path / "ok.png").write_bytes((Path(write_synthetic_dataset(tmp_path / "src", 1, 16)).parent / "images/000000.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"not a png")
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"prompt": "a cup", "chain": "a <|obj_start|>cup<|obj_end|> <|box_start|>(1,2),(300,400)<|box_end|>", "image": "ok.png"}
BAD_ROWS = [
    ("{not json", "Expecting property name"),
    ({**GOOD, "prompt": ""}, "field 'prompt'"),
    ({k: v for k, v in GOOD.items() if k != "image"}, "field 'image' must be"),
    ({**GOOD, "chain": "a <|obj_start|>cup<|obj_end|> <|box_start|>(1,2),(3)<|box_end|>"}, "field 'chain'.*4 coordinates"),
    ({**GOOD, "chain": "a cup without tags"}, "no tagged objects"),
    ({**GOOD, "image": "missing.png"}, "no file"),
    ({**GOOD, "image": "broken.png"}, "does not decode"),
    ({**GOOD, "chain": "a <|obj_start|>dot<|obj_end|> <|box_start|>(100,100),(100,100)<|box_end|>"},
     r"'dot' has a box of zero area \(100,100\),\(100,100\)"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_row_raises_naming_file_and_line(tmp_path, bad, message):
    path = _write_rows(tmp_path, [GOOD, "", bad, GOOD])
    with pytest.raises(GoTDataError, match=rf"rows\.jsonl:3: .*{message}"):
        GoTDataset(path)


def test_skip_invalid_counts_the_bad_rows(tmp_path):
    path = _write_rows(tmp_path, [GOOD] + [bad for bad, _ in BAD_ROWS] + [GOOD])
    dataset = GoTDataset(path, skip_invalid=True)
    assert len(dataset) == 2
    assert [line for line, _ in dataset.skipped] == list(range(2, 2 + len(BAD_ROWS)))
    assert dataset[1].line == len(BAD_ROWS) + 2


def test_a_file_without_valid_rows_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        GoTDataset(tmp_path / "nope.jsonl")
    path = _write_rows(tmp_path, [BAD_ROWS[1][0]])
    with pytest.raises(GoTDataError, match="no valid rows"):
        GoTDataset(path, skip_invalid=True)


# --- sharded data ------------------------------------------------------------------------------------------------


def _shards(tmp_path, sizes=(4, 3, 3), seed=0):
    """The rows of one synthetic file split into ``shard-0000k.jsonl`` beside their images (written last
    shard first, so only sorting puts them in order) and a stray non-JSONL file; returns the folder and the rows."""
    whole = write_synthetic_dataset(tmp_path / "data", num_samples=sum(sizes), image_size=16, seed=seed)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    whole.unlink()
    ends = np.cumsum((0,) + tuple(sizes))
    for k in reversed(range(len(sizes))):
        (whole.parent / f"shard-{k:05d}.jsonl").write_text("".join(lines[ends[k]:ends[k + 1]]), encoding="utf-8")
    (whole.parent / "notes.txt").write_text("not data\n")
    return whole.parent, lines


def _as_tuples(dataset):
    return [(r.prompt, r.chain, r.image_path.resolve()) for r in (dataset[i] for i in range(len(dataset)))]


def test_a_folder_and_a_glob_of_shards_read_as_the_concatenated_file(tmp_path, caplog):
    folder, lines = _shards(tmp_path)
    whole = folder / "concatenated.txt"  # not a *.jsonl, so not a shard
    whole.write_text("".join(lines), encoding="utf-8")
    expected = _as_tuples(GoTDataset(whole))
    with caplog.at_level("INFO", logger="gotr1.train.data"):
        by_folder = GoTDataset(folder)
    assert "10 rows in 3 shard(s)" in caplog.text
    by_glob = GoTDataset(folder / "shard-*.jsonl")
    assert [f.name for f in by_folder.files] == [f"shard-{k:05d}.jsonl" for k in range(3)] == [f.name for f in by_glob.files]
    assert len(by_folder) == len(by_glob) == 10
    assert _as_tuples(by_folder) == _as_tuples(by_glob) == expected
    assert [(by_folder[i].file.name, by_folder[i].line) for i in (0, 3, 4, 9, -1)] == [
        ("shard-00000.jsonl", 1), ("shard-00000.jsonl", 4), ("shard-00001.jsonl", 1), ("shard-00002.jsonl", 3),
        ("shard-00002.jsonl", 3)]
    with pytest.raises(IndexError):
        by_folder[10]


def test_a_broken_line_names_its_shard_and_line(tmp_path):
    folder, _ = _shards(tmp_path)
    shard = folder / "shard-00001.jsonl"
    rows = shard.read_text(encoding="utf-8").splitlines()
    shard.write_text("\n".join([rows[0], '{"prompt": "a cup"}', *rows[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(GoTDataError, match=r"shard-00001\.jsonl:2: field 'chain'"):
        GoTDataset(folder)
    dataset = GoTDataset(folder, skip_invalid=True)
    assert len(dataset) == 9
    assert [(line, reason.split(":")[0]) for line, reason in dataset.skipped] == [(2, "shard-00001.jsonl")]


def test_shard_specs_that_name_nothing_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.jsonl shards"):
        GoTDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="glob matches no file"):
        GoTDataset(tmp_path / "empty" / "shard-*.jsonl")


def test_rows_are_read_from_disk_when_asked_for(tmp_path):
    """The index keeps offsets only: a row rewritten in place after indexing reads back as rewritten."""
    folder, _ = _shards(tmp_path)
    dataset = GoTDataset(folder)
    shard = folder / "shard-00002.jsonl"
    before = dataset[7].prompt
    text = shard.read_text(encoding="utf-8")
    after = before.upper()
    assert after != before and len(after.encode()) == len(before.encode())
    shard.write_text(text.replace(json.dumps(before), json.dumps(after), 1), encoding="utf-8")
    assert dataset[7].prompt == after


def test_sft_trains_on_a_folder_of_shards(tmp_path):
    from gotr1.policy.model import tiny_janus
    from gotr1.train.config import SFTConfig
    from gotr1.train.sft import SFTTrainer

    folder, _ = _shards(tmp_path, sizes=(3, 2, 3))
    config = SFTConfig(data=str(folder), output_dir=str(tmp_path / "run"), batch_size=4, lr=1e-3, warmup_steps=1,
                       max_steps=2, save_every=1000, progress=False)
    trainer = SFTTrainer(*tiny_janus(seed=0), config)
    assert len(trainer.dataset) == 8 and len(trainer.dataset.files) == 3
    log = trainer.train()
    assert [m["step"] for m in log] == [1, 2] and all(np.isfinite(m["loss"]) for m in log)
