"""A PNG grid of samples: prompt, chain, layout canvas and generated image per row, for looking at a run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gotr1.chain import strip_boxes
from gotr1.layout import render_layouts

_TEXT_WIDTH = 360
_CHARS_PER_LINE = 58
_BACKGROUND = (255, 255, 255)


def sample_grid(prompts, chains, images, *, cell: int = 192, titles=None, max_rows: int = 8) -> Image.Image:
    """One row per sample: the prompt and caption text, the chain's layout canvas, the image.

    Parameters
    ----------
    prompts : list of str
    chains : list of Chain
        Parsed chains (their boxes are drawn; their text is shown without boxes).
    images : uint8 array ``[N, S, S, 3]`` or None
        The generated images; an empty cell when None.
    cell : int
        Side of the layout and image cells in pixels.
    titles : list of str, optional
        A line shown above each row's text (e.g. the reward).
    """
    n = min(len(prompts), max_rows)
    layouts = render_layouts(chains[:n], size=cell)
    grid = Image.new("RGB", (_TEXT_WIDTH + 2 * cell, n * cell), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for row in range(n):
        top = row * cell
        lines = [] if titles is None else [titles[row]]
        lines += textwrap.wrap(f"prompt: {prompts[row]}", _CHARS_PER_LINE)
        lines += textwrap.wrap(f"chain: {strip_boxes(chains[row].text)}", _CHARS_PER_LINE)
        draw.multiline_text((6, top + 6), "\n".join(lines[: cell // 12]), fill=(0, 0, 0), spacing=2)
        grid.paste(Image.fromarray(layouts[row]), (_TEXT_WIDTH, top))
        if images is not None:
            picture = Image.fromarray(np.asarray(images[row], dtype=np.uint8)).resize((cell, cell), Image.NEAREST)
            grid.paste(picture, (_TEXT_WIDTH + cell, top))
        draw.line([(0, top), (grid.width, top)], fill=(180, 180, 180))
    return grid


def save_sample_grid(path: str | Path, prompts, chains, images, **kwargs) -> Path:
    """:func:`sample_grid` written as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(prompts, chains, images, **kwargs).save(path)
    return path
