"""gotr1.eval.runner: the official layouts, resumable generation and scoring, --images, tables, bad input."""

import json
import os

import numpy as np
import pytest
import torch

from gotr1.metrics.metric import Metric
from gotr1.eval.protocols import CompBench, protocol
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


def test_images_land_in_the_official_layout_with_scores_tables_and_grid(policy, tmp_path):
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
    assert (tmp_path / "samples.png").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["benchmark"] == "t2i-compbench"


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
