"""An evaluation's outputs for people: the table beside the paper's rows, and the best and worst images."""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

from gotr1.eval.protocols import TINY_METRICS, Comparison, Protocol

MISSING = "—"
THUMB = 128
SHOWN = 2  # best and worst images per category


def _cell(value, note: str | None = None) -> str:
    text = MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    return f"{text} ({note})" if note else text


def _number(value) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def write_tables(protocol: Protocol, summary: dict[str, float], out: Path, comparison: Comparison) -> None:
    """``table.md`` and ``table.csv``: the run's row, then the published rows that may stand beside it.

    A cell the paper does not report, or a category not run, is marked; a run's cell where the run departs
    from the official pipeline carries its note ("detector differs"). Below the table (in ``table.csv``: in
    extra columns of the run's row) stand the facts of the run (noun-phrase parser, prompt lists, models),
    ``tiny_metrics``, and either the published rows' source or why they are withheld.
    """
    keys = [k for k in protocol.columns if k in summary] + [k for k in summary if k not in protocol.columns]
    names = [protocol.columns.get(k, k) for k in keys]
    rows = [("this run", [summary.get(k) for k in keys])]
    rows += [(f"{model} (paper)", [values.get(k) for k in keys]) for model, values in comparison.paper_rows.items()]
    notes = "; ".join(f"{protocol.columns.get(k, k)}: {note}" for k, note in comparison.cell_notes.items())
    extra = {"tiny_metrics": str(comparison.tiny_metrics).lower(), "notes": notes, **comparison.facts}
    with open(out / "table.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *names, *extra])
        for number, (model, values) in enumerate(rows):
            writer.writerow([model, *map(_number, values), *(extra.values() if number == 0 else [""] * len(extra))])
    lines = [f"tiny_metrics: true ({TINY_METRICS})", ""] if comparison.tiny_metrics else []
    lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines.append("| this run | " + " | ".join(_cell(v, comparison.cell_notes.get(k)) for k, v in zip(keys, rows[0][1]))
                 + " |")
    lines += ["| " + model + " | " + " | ".join(_cell(v) for v in values) + " |" for model, values in rows[1:]]
    lines.append("")
    if comparison.paper_rows:
        lines.append(f"Published rows: {protocol.paper_source}. {MISSING}: not reported or not run.")
    elif comparison.withheld:
        lines.append(f"Published rows withheld: {comparison.withheld}.")
    lines += [f"- {label}: {value}" for label, value in comparison.facts.items()]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _thumb(path: Path, caption: str) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB + 40), "white")
    try:
        with Image.open(path) as image:
            tile.paste(image.convert("RGB").resize((THUMB, THUMB)), (0, 0))
    except OSError:
        caption = "(unreadable) " + caption
    ImageDraw.Draw(tile).multiline_text((2, THUMB + 1), "\n".join(textwrap.wrap(caption, 24)[:3]), fill="black")
    return tile


def write_sample_grid(records: list[dict], root: Path, path: Path) -> Path | None:
    """``samples.png``: per category, the ``SHOWN`` best then the ``SHOWN`` worst scored images."""
    rows = []
    for category in dict.fromkeys(r["category"] for r in records):
        scored = sorted((r for r in records if r["category"] == category and r["score"] is not None
                         and not math.isnan(r["score"])), key=lambda r: r["score"], reverse=True)
        if scored:
            picks = scored[:SHOWN] + scored[-SHOWN:] if len(scored) > 2 * SHOWN else scored
            rows.append([_thumb(root / r["image"], f"{category} {r['score']:.2f} {r['prompt']}") for r in picks])
    if not rows:
        return None
    width = max(len(row) for row in rows)
    grid = Image.new("RGB", (width * THUMB, len(rows) * (THUMB + 40)), "white")
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            grid.paste(tile, (x * THUMB, y * (THUMB + 40)))
    grid.save(path)
    return path
