"""gotr1.eval.official and ``gotr1 eval import-official``: the official scripts' result files beside gotr1's scores."""

import json
import math

import pytest

from gotr1.cli import main
from gotr1.eval.official import compare_official
from gotr1.eval.protocols import CompBench, GenEval


def _record(image, category, score):
    return {"image": image, "category": category, "prompt": "p", "metric": "m", "score": score, "chain": None}


@pytest.fixture
def compbench_run(tmp_path):
    """A gotr1 run of 3 colour and 2 spatial images, and the official scripts' files for the same folder."""
    records = [_record(f"color/samples/a red cup_{n:06}.png", "color", s) for n, s in enumerate((0.5, 0.25, 1.0))]
    records += [_record(f"spatial/samples/a cat on the left of a dog_{n:06}.png", "spatial", s)
                for n, s in enumerate((0.0, 0.75))]
    for record in records:
        (tmp_path / record["image"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / record["image"]).write_bytes(b"")
    # BLIP_vqa.py numbers images by their position (answers as 4-decimal strings); 2D_spatial_eval.py by name
    blip = tmp_path / "color" / "annotation_blip"
    blip.mkdir()
    (blip / "vqa_result.json").write_text(json.dumps(
        [{"question_id": q, "answer": a} for q, a in enumerate(("0.4000", "0.2500", "0.7000"))]))
    unidet = tmp_path / "spatial" / "labels" / "annotation_obj_detection_2d"
    unidet.mkdir(parents=True)
    (unidet / "vqa_result.json").write_text(json.dumps([{"question_id": 1, "answer": 0.5},
                                                        {"question_id": 0, "answer": 0}]))
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "summary.json").write_text(json.dumps({"benchmark": "t2i-compbench"}))
    return tmp_path, records


def test_compbench_numbers_stand_beside_the_official_ones(compbench_run):
    folder, records = compbench_run
    rows = {row["category"]: row for row in compare_official(CompBench(), folder, records)}
    color, spatial = rows["color"], rows["spatial"]
    assert color["gotr1"] == pytest.approx(1.75 / 3) and color["official"] == pytest.approx(1.35 / 3)
    assert color["difference"] == pytest.approx(0.4 / 3)
    assert color["images_matched"] == 3 and color["mean_abs_difference"] == pytest.approx((0.1 + 0 + 0.3) / 3)
    assert (spatial["official"], spatial["images_matched"]) == (0.25, 2)
    assert spatial["mean_abs_difference"] == pytest.approx(0.125)  # image 1: 0.75 against 0.5


def test_import_official_writes_the_comparison(compbench_run, capsys):
    folder, _ = compbench_run
    assert main(["eval", "import-official", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "| Color | 0.5833 | 0.4500 | +0.1333 | 3 | 0.1333 |" in out
    saved = json.loads((folder / "official.json").read_text())
    assert saved["benchmark"] == "t2i-compbench" and [r["category"] for r in saved["rows"]] == ["color", "spatial"]
    assert (folder / "official.md").read_text() in out


def test_geneval_results_jsonl_is_matched_by_image_path(tmp_path):
    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    records, official = [], []
    for index, tag in enumerate(tags):
        for sample, (ours, theirs) in enumerate(((1.0, True), (1.0 if tag == "colors" else 0.0, False))):
            image = f"{index:05}/samples/{sample:04}.png"
            records.append(_record(image, tag, ours))
            official.append({"filename": f"/elsewhere/images/{image}", "tag": tag, "correct": theirs, "reason": ""})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in official))
    rows = {row["category"]: row for row in compare_official(GenEval(), tmp_path, records)}
    assert rows["colors"]["gotr1"] == 1.0 and rows["colors"]["official"] == 0.5
    assert rows["colors"]["mean_abs_difference"] == 0.5 and rows["two_object"]["difference"] == 0.0
    assert rows["overall"]["official"] == 0.5 and rows["overall"]["gotr1"] == pytest.approx(7 / 12)
    assert rows["overall"]["images_matched"] == 12 and not math.isnan(rows["overall"]["mean_abs_difference"])


def test_missing_results_are_refused_by_name(tmp_path, capsys):
    with pytest.raises(ValueError, match="official results: none of color/annotation_blip/vqa_result.json"):
        compare_official(CompBench(), tmp_path, [_record("color/samples/a_000000.png", "color", 0.5)])
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        compare_official(GenEval(), tmp_path, [])
    assert main(["eval", "import-official", str(tmp_path)]) == 2
    assert "no gotr1 evaluation in" in capsys.readouterr().err
