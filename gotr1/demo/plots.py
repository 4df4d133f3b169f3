"""Small line plots drawn with PIL (no plotting library needed): per-step reward curves of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_plot(series: dict[str, list[float]], path: str | Path, title: str = "", width: int = 720,
              height: int = 420, y_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write a PNG with one line per named series over its index (steps), NaN points skipped."""
    margin_l, margin_r, margin_t, margin_b = 56, 160, 36, 40
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = margin_l, margin_t, width - margin_r, height - margin_b
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    lo, hi = y_range
    steps = max((len(v) for v in series.values()), default=1)
    for k in range(5):
        value = lo + (hi - lo) * k / 4
        y = y1 - (y1 - y0) * k / 4
        draw.line([(x0, y), (x1, y)], fill=(230, 230, 230))
        draw.text((6, y - 6), f"{value:.2f}", fill=(0, 0, 0))
    draw.text((x0, y1 + 8), "step 1", fill=(0, 0, 0))
    draw.text((x1 - 60, y1 + 8), f"step {steps}", fill=(0, 0, 0))
    draw.text((x0, 10), title, fill=(0, 0, 0))
    for i, (name, values) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        points = [(x0 + (x1 - x0) * j / max(steps - 1, 1), y1 - (y1 - y0) * (np.clip(v, lo, hi) - lo) / (hi - lo))
                  for j, v in enumerate(values) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for p in points[-1:]:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
        draw.line([(x1 + 12, y0 + 14 + 18 * i), (x1 + 32, y0 + 14 + 18 * i)], fill=color, width=3)
        draw.text((x1 + 38, y0 + 8 + 18 * i), name, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
