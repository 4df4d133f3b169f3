"""Evaluation: generate for prompt lists and score every image, one table row per model.

``gotr1 eval`` generates for the T2I-CompBench validation lists (shipped with gotr1) and scores each image
with the judge's prompt-image rubric (R_PI), writing ``scores.jsonl`` (one line per sample), and the mean
per category as ``table.csv`` and ``table.md`` in the column layout of GoT-R1's T2I-CompBench table.
Departure from the paper: T2I-CompBench's own metrics (BLIP-VQA, UniDet, CLIP, 3-in-1) are not re-implemented
here; the MLLM judge's rubric stands in for all of them, so numbers are comparable between gotr1 runs, not
with the paper's table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from gotr1.rollout import Sampling, generate_batched

COLUMNS = {"color": "Color", "shape": "Shape", "texture": "Texture", "spatial": "2D-Spatial",
           "non_spatial": "Non-Spatial", "complex": "Complex"}


def evaluate(model, processor, scorer, prompts_by_category: dict[str, list[str]], out_dir: str | Path, *,
             num_samples: int = 1, batch_size: int = 8, sampling: Sampling = Sampling(), limit: int | None = None,
             progress: bool = True) -> dict[str, float]:
    """Mean score per category, with ``scores.jsonl``, ``table.csv`` and ``table.md`` written to ``out_dir``.

    Parameters
    ----------
    scorer : callable
        ``(prompts, chains, images) -> float32 [N]`` scores in [0, 1] (NaN: not scorable, left out of means).
    prompts_by_category : dict
        Category name -> prompts (see :func:`gotr1.prompt_sets.read_prompts`).
    limit : int, optional
        Use only the first ``limit`` prompts of each category.
    sampling : Sampling
        How every category is generated (each batch of prompts offsets the seed by its first prompt's index).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    means = {}
    with open(out_dir / "scores.jsonl", "w", encoding="utf-8") as log:
        for category, prompts in prompts_by_category.items():
            prompts = prompts[:limit] if limit else prompts
            scores = []
            for chunk, r in generate_batched(model, processor, prompts, num_samples=num_samples, batch_size=batch_size,
                                             sampling=sampling, desc=category, progress=progress):
                rows = [chunk[g] for g in r.group.tolist()]
                values = np.asarray(scorer(rows, r.chains, r.images.numpy()), dtype=np.float64)
                scores += values.tolist()
                for prompt, chain, value in zip(rows, r.texts, values):
                    log.write(json.dumps({"category": category, "prompt": prompt, "chain": chain,
                                          "score": None if math.isnan(value) else float(value)}) + "\n")
            valid = [s for s in scores if not math.isnan(s)]
            means[category] = float(np.mean(valid)) if valid else float("nan")
    write_table(means, out_dir)
    return means


def write_table(means: dict[str, float], out_dir: Path) -> None:
    """``table.csv`` and ``table.md``: one row, the paper's column names for T2I-CompBench categories."""
    names = [COLUMNS.get(c, c) for c in means]
    values = [f"{v:.4f}" for v in means.values()]
    with open(out_dir / "table.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerow(values)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names), "| " + " | ".join(values) + " |"]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
