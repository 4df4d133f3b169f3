"""Running a benchmark: generation, then scoring, each resumable, sharded over ranks under torchrun.

Generation writes the images in the benchmark's official layout (:mod:`gotr1.eval.protocols`) and each
chain under ``chains/``. Prompts are generated in fixed chunks of ``batch_size`` prompts, chunk ``c`` with
seed ``sampling.seed + c``, so an image does not depend on how many ranks ran or where a killed run
stopped: a rerun skips every image already written and regenerates only what is missing. Under torchrun,
rank ``r`` takes chunks ``r, r + world, ...``.

Scoring reads images from disk (so ``--images`` scores any model's images the same way), skips those
already in ``scores.jsonl``, and appends a record per image as each batch is scored: ``image`` (relative
path), ``category``, ``prompt``, ``metric``, ``score`` (null: not scorable), ``chain``. Unreadable images
are skipped, counted and named in ``summary.json``; a rerun tries them again. Each rank writes its own
``scores.rank{r}.jsonl``; rank 0 merges them into ``scores.jsonl`` and writes the tables.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError

from gotr1.eval.protocols import ImageRecord, PromptItem, Protocol
from gotr1.eval.report import write_sample_grid, write_tables
from gotr1.progress import progress_bar
from gotr1.rollout import Sampling, rollout

SCORES = "scores.jsonl"


@dataclass
class EvalResult:
    """What a benchmark run produced: the table row, how many images were scored, what was skipped."""

    summary: dict[str, float]
    scored: int = 0
    not_scored: int = 0
    skipped: list[dict] = field(default_factory=list)


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    """Write atomically: a killed run never leaves a truncated image that a rerun would take as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


def chain_path(root: Path, image: Path) -> Path:
    """Where the chain of ``image`` (under ``root``) is kept: outside the image folders, which the official
    scripts list."""
    return root / "chains" / image.relative_to(root).with_suffix(".txt")


def generate(protocol: Protocol, model, processor, items: list[PromptItem], out: Path, *, per_prompt: int,
             batch_size: int = 8, sampling: Sampling = Sampling(), progress: bool = True) -> int:
    """Write every missing image of ``items`` (this rank's chunks); returns how many were written."""
    rank, world = _rank_and_world()
    chunks = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    mine = list(enumerate(chunks))[rank::world]
    written = 0
    model.eval()
    for number, chunk in progress_bar(mine, desc=f"{protocol.name}: generate", enabled=progress and rank == 0):
        paths = [protocol.image_path(out, item, k, per_prompt) for item in chunk for k in range(per_prompt)]
        if all(p.is_file() for p in paths):
            continue
        for item in chunk:
            protocol.prepare_folder(out, item)
        r = rollout(model, processor, [item.prompt for item in chunk], per_prompt, sampling.with_seed(sampling.seed + number))
        for row, path in enumerate(paths):
            if path.is_file():
                continue
            _save_png(r.images[row].numpy(), path)
            chain = chain_path(out, path)
            chain.parent.mkdir(parents=True, exist_ok=True)
            chain.write_text(r.texts[row], encoding="utf-8")
            written += 1
    return written


def read_scores(out: Path) -> dict[str, dict]:
    """Every score record written so far (all ranks' files), by image."""
    records = {}
    for file in sorted(out.glob("scores*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a kill: that image is scored again
                continue
            records[record["image"]] = record
    return records


def _load(record: ImageRecord) -> np.ndarray:
    with Image.open(record.path) as image:
        return np.asarray(image.convert("RGB"))


def score(protocol: Protocol, metrics: dict, records: list[ImageRecord], out: Path, root: Path, *,
          batch_size: int = 16, progress: bool = True) -> EvalResult:
    """Score this rank's share of ``records`` (images under ``root``) not yet in ``out``'s scores;
    ``metrics`` maps category -> metric."""
    rank, world = _rank_and_world()
    done = read_scores(out)
    key = lambda r: os.path.relpath(r.path, root)  # noqa: E731 - the record's key, used twice
    todo = [r for i, r in enumerate(records) if i % world == rank and key(r) not in done]
    missing = sorted({r.item.category for r in todo} - set(metrics))
    if missing:
        raise ValueError(f"categories: no {protocol.name} metric for {missing}")
    result = EvalResult(summary={})
    file = out / (SCORES if world == 1 else f"scores.rank{rank}.jsonl")
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    with open(file, "a", encoding="utf-8") as log:
        for batch in progress_bar(batches, desc=f"{protocol.name}: score", enabled=progress and rank == 0):
            for category in dict.fromkeys(r.item.category for r in batch):
                readable, images = [], []
                for record in (r for r in batch if r.item.category == category):
                    try:
                        images.append(_load(record))
                        readable.append(record)
                    except (OSError, UnidentifiedImageError, ValueError) as err:
                        result.skipped.append({"image": key(record), "error": f"{type(err).__name__}: {err}"})
                if not readable:
                    continue
                metric = metrics[category]
                values = protocol.score(metric, [r.item for r in readable], images)
                for record, value in zip(readable, values):
                    chain = chain_path(root, record.path)
                    ok = not math.isnan(value)
                    result.scored += ok
                    result.not_scored += not ok
                    log.write(json.dumps({
                        "image": key(record), "category": category, "prompt": record.item.prompt,
                        "metric": metric.name, "score": float(value) if ok else None,
                        "chain": chain.read_text(encoding="utf-8") if chain.is_file() else None}) + "\n")
                log.flush()
    return result


def merge_scores(out: Path) -> list[dict]:
    """All ranks' records as one ``scores.jsonl`` (written atomically); the per-rank files are removed."""
    records = read_scores(out)
    tmp = out / f".{SCORES}.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()), encoding="utf-8")
    os.replace(tmp, out / SCORES)
    for file in out.glob("scores.rank*.jsonl"):
        file.unlink()
    return list(records.values())


def _gathered(result: EvalResult) -> EvalResult:
    rank, world = _rank_and_world()
    if world == 1:
        return result
    parts = [None] * world
    dist.all_gather_object(parts, (result.scored, result.not_scored, result.skipped))
    return EvalResult({}, sum(p[0] for p in parts), sum(p[1] for p in parts), [s for p in parts for s in p[2]])


def run_benchmark(protocol: Protocol, metrics: dict, out: str | Path, *, model=None, processor=None,
                  images: str | Path | None = None, categories: list[str] | None = None, limit: int | None = None,
                  per_prompt: int | None = None, batch_size: int = 8, score_batch_size: int = 16,
                  sampling: Sampling = Sampling(), progress: bool = True, tiny_metrics: bool = False) -> EvalResult:
    """Generate (unless ``images`` names a folder to score), score, and on rank 0 write the tables.

    Writes to ``out``: the images (official layout), ``chains/``, ``scores.jsonl``, ``table.md`` /
    ``table.csv`` (the run's row beside the paper's where comparable, :meth:`Protocol.compare`),
    ``samples.png`` (best and worst images per category) and ``summary.json``. ``tiny_metrics``: the metrics
    are random-weight tiny models; the tables then show no published row and say so.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    categories = list(categories or protocol.categories)
    per_prompt = per_prompt or protocol.images_per_prompt
    if images is None:
        if model is None:
            raise ValueError("model: give a policy to generate with, or --images to score an existing folder")
        items = protocol.items(categories, limit)
        generate(protocol, model, processor, items, out, per_prompt=per_prompt, batch_size=batch_size,
                 sampling=sampling, progress=progress)
        records = [ImageRecord(item, k, protocol.image_path(out, item, k, per_prompt))
                   for item in items for k in range(per_prompt)]
        if _rank_and_world()[1] > 1:
            dist.barrier()  # every rank scores images that others may have generated
    else:
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"images: {folder} is not a folder")
        records = [r for r in protocol.find_images(folder) if r.item.category in categories]
        if not records:
            raise ValueError(f"images: no {protocol.name} images for {categories} in {folder} "
                             "(expected the benchmark's official layout)")
    root = out if images is None else Path(images)
    result = _gathered(score(protocol, metrics, records, out, root, batch_size=score_batch_size, progress=progress))
    rank, world = _rank_and_world()
    if world > 1:
        dist.barrier()
    if rank == 0:
        merged = merge_scores(out)
        result.summary = protocol.summary(merged)
        comparison = protocol.compare(metrics, tiny_metrics)
        write_tables(protocol, result.summary, out, comparison)
        write_sample_grid(merged, root, out / "samples.png")
        (out / "summary.json").write_text(json.dumps({
            "benchmark": protocol.name, "summary": result.summary, "tiny_metrics": tiny_metrics,
            "metrics": {category: metrics[category].describe() for category in sorted(metrics)},
            "facts": comparison.facts, "cell_notes": comparison.cell_notes,
            "paper_rows": list(comparison.paper_rows), "paper_rows_withheld": comparison.withheld,
            "scored_this_run": result.scored,
            "not_scored_this_run": result.not_scored, "skipped": result.skipped}, indent=2) + "\n", encoding="utf-8")
    if world > 1:
        dist.barrier()
    return result

