"""gotr1.eval.runner: the official layouts, resumable generation and scoring, --images, tables, bad input."""

import csv
import json
import os

import numpy as np
import pytest
import torch

from gotr1.metrics import nouns
from gotr1.metrics.metric import Metric
from gotr1.eval.protocols import SPACY_INSTALL, CompBench, GenEval, protocol
from gotr1.eval.runner import run_benchmark
from gotr1.policy.model import tiny_janus
from gotr1.rollout import Sampling

SAMPLING = Sampling(max_chain_tokens=6, seed=3)


class PixelMean(Metric):
    """A stand-in metric: the image's mean brightness, NaN for prompts holding 'NaN-me'."""

    name = "pixel_mean"

    def __init__(self):
        self.calls = 0

    def score(self, prompts, images):
        self.calls += len(images)
        return np.array([np.nan if "NaN-me" in p else float(np.asarray(i).mean()) / 255 for p, i in zip(prompts, images)])


@pytest.fixture
def spacy_ran(monkeypatch):
    """As if spaCy's en_core_web_sm had parsed the prompts (the stand-in metrics here parse nothing)."""
    monkeypatch.setattr(nouns, "_spacy", lambda: object())


@pytest.fixture
def rules_ran(monkeypatch):
    monkeypatch.setattr(nouns, "_spacy", lambda: None)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return tiny_janus(seed=0)


def _run(policy, out, metric=None, **kwargs):
    metric = metric or PixelMean()
    args = dict(categories=["color", "spatial"], limit=2, per_prompt=2, batch_size=3, sampling=SAMPLING, progress=False)
    args.update(kwargs)
    return run_benchmark(CompBench(), {"color": metric, "spatial": metric}, out, model=policy[0], processor=policy[1],
                         **args)


def _scores(out):
    return {r["image"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}


def test_images_land_in_the_official_layout_with_scores_tables_and_grid(policy, tmp_path, spacy_ran):
    result = _run(policy, tmp_path)
    color = (tmp_path / "color" / "samples").glob("*.png")
    names = sorted(p.name for p in color)
    first = CompBench().items(["color"], 1)[0].prompt
    assert {f"{first}_000000.png", f"{first}_000001.png"} <= set(names) and len(names) == 4
    assert len(list((tmp_path / "spatial" / "samples").glob("*.png"))) == 4
    scores = _scores(tmp_path)
    assert len(scores) == 8 and result.scored == 8
    record = scores[f"color/samples/{first}_000000.png"]
    assert record["category"] == "color" and record["prompt"] == first and record["metric"] == "pixel_mean"
    assert isinstance(record["chain"], str)
    expected = np.mean([r["score"] for r in scores.values() if r["category"] == "color"])
    assert result.summary["color"] == pytest.approx(expected)
    table = (tmp_path / "table.md").read_text()
    assert "| model | Color | 2D-Spatial |" in table and "| GoT-R1-1B (paper) | 0.7632 | 0.2674 |" in table
    spatial = result.summary["spatial"]
    assert f"| this run | {result.summary['color']:.4f} | {spatial:.4f} (detector differs) |" in table
    assert "- noun phrases: spaCy en_core_web_sm (official)" in table
    assert "- prompt lists: T2I-CompBench 2023-07" in table
    assert (tmp_path / "samples.png").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["benchmark"] == "t2i-compbench" and summary["tiny_metrics"] is False
    assert summary["paper_rows"] == ["GoT-R1-1B", "GoT-R1-7B", "Janus-Pro-7B"]
    assert summary["paper_rows_withheld"] is None


def _score_folder(tmp_path, protocol=None, **kwargs):
    """Score two hand-made images (a colour one, a spatial one) with the stand-in metric; the tables' lines."""
    from PIL import Image

    for category, prompt in (("color", "a red cup"), ("spatial", "a cat on the left of a dog")):
        (tmp_path / "images" / category / "samples").mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "images" / category / "samples" /
                                                      f"{prompt}_000000.png")
    run_benchmark(protocol or CompBench(), {"color": PixelMean(), "spatial": PixelMean()}, tmp_path / "out",
                  images=tmp_path / "images", categories=["color", "spatial"], progress=False, **kwargs)
    with open(tmp_path / "out" / "table.csv", newline="") as f:
        header, *rows = csv.reader(f)
    return (tmp_path / "out" / "table.md").read_text(), dict(zip(header, rows[0])), len(rows)


def test_without_spacy_the_run_stands_alone_and_says_why(tmp_path, rules_ran):
    table, csv_row, csv_rows = _score_folder(tmp_path)
    assert "(paper)" not in table
    assert "Published rows withheld: the prompts were parsed by gotr1's rule chunker" in table
    assert SPACY_INSTALL in table and "- noun phrases: gotr1's rule chunker" in table
    assert csv_rows == 1 and csv_row["noun phrases"].startswith("gotr1's rule chunker")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["paper_rows"] == [] and "rule chunker" in summary["paper_rows_withheld"]


def test_tiny_metrics_never_stand_beside_the_paper(tmp_path, spacy_ran):
    table, csv_row, csv_rows = _score_folder(tmp_path, tiny_metrics=True)
    assert table.startswith("tiny_metrics: true") and "(paper)" not in table
    assert "Published rows withheld: random-weight tiny metric models" in table
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tiny_metrics"] is True
    assert csv_rows == 1 and csv_row["tiny_metrics"] == "true"


def test_the_prompt_revision_is_chosen_and_named(tmp_path, spacy_ran):
    paper, revised = (CompBench(r).items(["color"]) for r in ("2023-07", "2025-09"))
    changed = [(a.prompt, b.prompt) for a, b in zip(paper, revised) if a.prompt != b.prompt]
    assert len(paper) == len(revised) == 300 and len(changed) == 5
    assert ("a yellow taxi and a black tire", "a yellow taxi and a red tire") in changed
    table, csv_row, csv_rows = _score_folder(tmp_path, CompBench("2025-09"))
    assert csv_rows == 4 and csv_row["notes"] == "2D-Spatial: detector differs; Color: prompt list 2025-09"
    assert "(prompt list 2025-09) |" in table and "- prompt lists: T2I-CompBench 2025-09" in table
    with pytest.raises(ValueError, match="prompt revision: '2024-01' is not one of 2023-07, 2025-09"):
        CompBench("2024-01")
    with pytest.raises(ValueError, match="prompt revision: geneval has no T2I-CompBench prompt lists"):
        protocol("geneval", "2025-09")


def test_geneval_prints_the_papers_verified_rows():
    comparison = GenEval().compare({"colors": PixelMean()})
    assert comparison.paper_rows["GoT-R1-7B"] == {"single_object": .99, "two_object": .94, "counting": .50,
                                                  "colors": .90, "position": .46, "color_attr": .68, "overall": .75}
    assert "Table 2" in GenEval.paper_source and "1333 x 800" in comparison.facts["detector"]
    assert GenEval().compare({"colors": PixelMean()}, tiny_metrics=True).paper_rows == {}


def test_a_rerun_generates_and_scores_only_what_is_missing(policy, tmp_path):
    _run(policy, tmp_path)
    before = _scores(tmp_path)
    table = (tmp_path / "table.csv").read_text()
    lost = next(iter(sorted((tmp_path / "spatial" / "samples").glob("*.png"))))
    kept = sorted((tmp_path / "color" / "samples").glob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    pixels = np.asarray(__import__("PIL.Image").Image.open(lost)).copy()
    lost.unlink()  # as if the run had been killed before writing it and scoring it
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    key = os.path.relpath(lost, tmp_path)
    (tmp_path / "scores.jsonl").write_text("".join(l + "\n" for l in lines if json.loads(l)["image"] != key))
    metric = PixelMean()
    _run(policy, tmp_path, metric)
    assert metric.calls == 1, "only the lost image is scored again"
    assert all(p.stat().st_mtime_ns == stamps[p] for p in kept), "finished images are not regenerated"
    assert np.array_equal(np.asarray(__import__("PIL.Image").Image.open(lost)), pixels), "the same image comes back"
    assert _scores(tmp_path)[key]["score"] == pytest.approx(before[key]["score"])
    assert (tmp_path / "table.csv").read_text() == table


def test_an_image_folder_is_rescored_with_the_same_numbers(policy, tmp_path):
    generated = tmp_path / "run"
    first = _run(policy, generated)
    again = run_benchmark(CompBench(), {"color": PixelMean(), "spatial": PixelMean()}, tmp_path / "rescored",
                          images=generated, categories=["color", "spatial"], progress=False)
    assert again.summary == pytest.approx(first.summary)
    assert set(_scores(tmp_path / "rescored")) == set(_scores(generated))


def test_unreadable_images_are_skipped_counted_and_named(policy, tmp_path):
    _run(policy, tmp_path / "run")
    broken = sorted((tmp_path / "run" / "color" / "samples").glob("*.png"))[0]
    broken.write_bytes(b"not a png")
    result = run_benchmark(CompBench(), {"color": PixelMean()}, tmp_path / "rescored", images=tmp_path / "run",
                           categories=["color"], progress=False)
    assert result.scored == 3 and [s["image"] for s in result.skipped] == [os.path.relpath(broken, tmp_path / "run")]
    summary = json.loads((tmp_path / "rescored" / "summary.json").read_text())
    assert summary["skipped"][0]["error"].startswith("UnidentifiedImageError")


def test_not_scorable_images_are_null_and_left_out_of_the_means(tmp_path):
    folder = tmp_path / "images" / "color" / "samples"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 255, 255)).save(folder / "a white cube_000000.png")
    Image.new("RGB", (8, 8), (0, 0, 0)).save(folder / "NaN-me_000001.png")
    result = run_benchmark(CompBench(), {"color": PixelMean()}, tmp_path / "out", images=tmp_path / "images",
                           categories=["color"], progress=False)
    assert result.summary["color"] == pytest.approx(1.0) and (result.scored, result.not_scored) == (1, 1)
    assert sorted(r["score"] is None for r in _scores(tmp_path / "out").values()) == [False, True]


def test_bad_input_is_refused_by_name(policy, tmp_path):
    with pytest.raises(ValueError, match="benchmark"):
        protocol("drawbench")
    with pytest.raises(ValueError, match="categories"):
        _run(policy, tmp_path, categories=["colour"])
    with pytest.raises(FileNotFoundError, match="images"):
        run_benchmark(CompBench(), {}, tmp_path, images=tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match="no t2i-compbench images"):
        run_benchmark(CompBench(), {}, tmp_path, images=tmp_path, progress=False)
    with pytest.raises(ValueError, match="model"):
        run_benchmark(CompBench(), {}, tmp_path, progress=False)


@pytest.mark.slow  # two processes; test_grpo's gloo test keeps the distributed path in the default run
def test_two_gloo_ranks_give_the_same_images_scores_and_table_as_one(tmp_path):
    """Chunks are seeded by their number, not by the rank that runs them: sharding changes nothing."""
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("_eval_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for ranks in (1, 2):
        out = tmp_path / f"ranks{ranks}"
        out.mkdir()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={ranks}", str(worker), str(out)],
                              capture_output=True, text=True, timeout=600, env=env, cwd=out)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = _scores(tmp_path / "ranks1"), _scores(tmp_path / "ranks2")
    assert len(one) == 12 and one.keys() == two.keys()
    for image in one:
        assert two[image]["score"] == pytest.approx(one[image]["score"], abs=1e-12), image
    assert not list((tmp_path / "ranks2").glob("scores.rank*.jsonl")), "rank files are merged away"
    assert (tmp_path / "ranks1" / "table.csv").read_text() == (tmp_path / "ranks2" / "table.csv").read_text()
