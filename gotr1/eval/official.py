"""Cross-checking a gotr1 evaluation with the official scripts' own results for the same images.

``gotr1 eval`` writes images in the layouts the official scripts read, so on a machine where they run (UniDet
needs Detectron2, GenEval mmdet) they can score the very same folder. :func:`compare_official` reads their
output files and sets their numbers beside gotr1's, per category, with the difference and a per-image
comparison; ``gotr1 eval import-official DIR`` writes ``official.md`` and ``official.json`` and prints the table.

Where the official scripts leave their results (T2I-CompBench: in each category folder they were run on,
``DIR/{category}/``; GenEval: the ``--outfile`` of ``evaluation/evaluate_images.py``):

| category | file | image key |
|---|---|---|
| color, shape, texture | ``annotation_blip/vqa_result.json`` (``BLIP_vqa.py``) | position in number order |
| spatial | ``labels/annotation_obj_detection_2d/vqa_result.json`` (``2D_spatial_eval.py``) | the image's number |
| non_spatial | ``annotation_clip/vqa_result.json`` (``CLIP_similarity.py``) | position in number order |
| complex | ``annotation_3_in_1/vqa_result.json`` (``3_in_1.py``) | the image's number (10 a prompt, list order) |
| GenEval tags | ``results.jsonl`` (a record per image: ``filename``, ``tag``, ``correct``) | the image's path |

An official category score is the mean of its file's answers, as the official scripts print it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from gotr1.eval.protocols import Protocol

COMPBENCH_FILES = {
    "color": "annotation_blip/vqa_result.json", "shape": "annotation_blip/vqa_result.json",
    "texture": "annotation_blip/vqa_result.json", "spatial": "labels/annotation_obj_detection_2d/vqa_result.json",
    "non_spatial": "annotation_clip/vqa_result.json", "complex": "annotation_3_in_1/vqa_result.json",
}
NUMBERED_BY_NAME = ("spatial", "complex")
"""Categories whose official ``question_id`` is the image's number; the others number images by position."""
GENEVAL_RESULTS = "results.jsonl"
_NUMBER = re.compile(r"_(\d+)\.png$")


def _image_number(path: str) -> int | None:
    match = _NUMBER.search(path)
    return int(match.group(1)) if match else None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"official results: {path} is not JSON ({err})") from None


def read_compbench(folder: Path, category: str) -> dict[int, float] | None:
    """Image number -> the official score, from the official file of ``category`` under ``folder``; None if absent."""
    file = folder / category / COMPBENCH_FILES[category]
    if not file.is_file():
        return None
    answers = {int(row["question_id"]): float(row["answer"]) for row in _read_json(file)}
    if category in NUMBERED_BY_NAME:
        return answers
    names = (path.name for path in (folder / category / "samples").glob("*.png"))
    numbers = sorted(n for n in map(_image_number, names) if n is not None)
    return {numbers[q] if q < len(numbers) else q: value for q, value in answers.items()}


def read_geneval(path: Path) -> dict[str, dict]:
    """``00012/samples/0003.png`` -> the official record (``tag``, ``correct``), from a ``results.jsonl``."""
    records = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"official results: {path}:{number} is not JSON ({err})") from None
            records["/".join(Path(record["filename"]).parts[-3:])] = record
    return records


def _row(name: str, ours: float, official: float, pairs: list[tuple[float, float]]) -> dict:
    return {"category": name, "gotr1": ours, "official": official, "difference": ours - official,
            "images_matched": len(pairs),
            "mean_abs_difference": float(np.mean([abs(a - b) for a, b in pairs])) if pairs else math.nan}


def _scored(records: list[dict]) -> list[dict]:
    return [r for r in records if r["score"] is not None and not math.isnan(r["score"])]


def compare_official(protocol: Protocol, official: str | Path, records: list[dict]) -> list[dict]:
    """Per category: gotr1's number, the official one, their difference and a per-image comparison.

    Parameters
    ----------
    protocol : Protocol
        The benchmark the gotr1 run evaluated (``t2i-compbench`` or ``geneval``).
    official : str or Path
        T2I-CompBench: the image folder the official scripts ran on (category folders inside). GenEval: the
        official ``results.jsonl``, or a folder holding it.
    records : list of dict
        gotr1's ``scores.jsonl`` records of the same images.

    Returns
    -------
    list of dict
        ``category``, ``gotr1``, ``official``, ``difference`` (gotr1 - official), ``images_matched`` and
        ``mean_abs_difference`` per image; GenEval adds an ``overall`` row.
    """
    official = Path(official)
    if protocol.name == "geneval":
        return _compare_geneval(protocol, official, records)
    if protocol.name != "t2i-compbench":
        raise ValueError(f"benchmark: {protocol.name} has no official scripts to compare with")
    if not official.is_dir():
        raise FileNotFoundError(f"official results: {official} is not a folder")
    ours = protocol.summary(records)
    rows = []
    for category in ours:
        answers = read_compbench(official, category)
        if answers is None:
            continue
        pairs = [(r["score"], answers[n]) for r in _scored(records) if r["category"] == category
                 and (n := _image_number(r["image"])) in answers]
        rows.append(_row(category, ours[category], float(np.mean(list(answers.values()))), pairs))
    if not rows:
        raise ValueError(f"official results: none of {', '.join(f'{c}/{f}' for c, f in COMPBENCH_FILES.items())} "
                         f"under {official}")
    return rows


def _compare_geneval(protocol: Protocol, official: Path, records: list[dict]) -> list[dict]:
    from gotr1.metrics.geneval import summarize

    path = official / GENEVAL_RESULTS if official.is_dir() else official
    if not path.is_file():
        raise FileNotFoundError(f"official results: no {path} (evaluate_images.py --outfile)")
    theirs = read_geneval(path)
    official_summary = summarize([r["tag"] for r in theirs.values()], [float(r["correct"]) for r in theirs.values()])
    ours = protocol.summary(records)
    rows = []
    for category in [c for c in protocol.columns if c in ours and c in official_summary]:
        pairs = [(r["score"], float(theirs[r["image"]]["correct"])) for r in _scored(records)
                 if r["image"] in theirs and (category == "overall" or r["category"] == category)]
        rows.append(_row(category, ours[category], float(official_summary[category]), pairs))
    return rows


def write_comparison(protocol: Protocol, rows: list[dict], out: Path) -> str:
    """``official.md`` and ``official.json`` in ``out``; returns the Markdown table."""
    lines = ["| category | gotr1 | official | gotr1 - official | images matched | mean abs difference per image |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {protocol.columns.get(row['category'], row['category'])} | {row['gotr1']:.4f} | "
                     f"{row['official']:.4f} | {row['difference']:+.4f} | {row['images_matched']} | "
                     f"{row['mean_abs_difference']:.4f} |")
    table = "\n".join(lines) + "\n"
    (out / "official.md").write_text(table, encoding="utf-8")
    (out / "official.json").write_text(json.dumps({"benchmark": protocol.name, "rows": rows}, indent=2) + "\n",
                                       encoding="utf-8")
    return table
