"""Layout canvases per second: ``render_layouts`` (C++ threads) against the same drawing with PIL ImageDraw.

The batch is what one GRPO step sends to the spatial judge: 256 layouts of 8 labelled boxes at 384 x 384
(``--quick``: 64 layouts). Both sides draw the same white canvases with the same outlines (PIL-exact, width 3),
then each name on a filled background at its box's top-left corner, and end with uint8 numpy arrays:

- PIL: per layout ``Image.new``, ``ImageDraw.rectangle`` per box, ``textbbox`` + filled ``rectangle`` + ``text``
  per label, ``np.asarray``; timed with PIL's bitmap font and with its FreeType default font (size 14);
- gotr1: one ``render_layouts`` call into a fresh array, into a reused ``out=`` array, and on one thread.

The memory-write floor is writing the N*H*W*3 output bytes once: ``ndarray.fill`` of a reused (already paged-in)
array, and ``np.full`` of a fresh one (which also pays the page faults, as a fresh ``render_layouts`` does).
Everything runs on the CPU, also on a GPU machine. Prints a Markdown table with the machine's name.

    python benchmarks/bench_canvas.py            # 256 layouts, 9 repeats
    python benchmarks/bench_canvas.py --quick    # 64 layouts, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gotr1.chain import Box, ChainObject
from gotr1.layout import PALETTE, layout_boxes, render_layouts

NOUNS = ["cat", "dog", "red apple", "blue vase", "green bench", "bicycle", "lamp", "yellow cup", "horse", "clock",
         "wooden table", "small bird", "window", "potted plant"]
SIZE, LINE_WIDTH, BOXES = 384, 3, 8


def make_chains(count: int, seed: int = 0) -> list[list[ChainObject]]:
    """``count`` layouts of ``BOXES`` named boxes at random places on the 0-1000 scale."""
    rng = np.random.default_rng(seed)
    chains = []
    for _ in range(count):
        objects = []
        for name in rng.choice(NOUNS, size=BOXES, replace=False):
            x, y = (int(v) for v in rng.integers(0, 700, size=2))
            w, h = (int(v) for v in rng.integers(80, 300, size=2))
            objects.append(ChainObject(str(name), Box(x, y, x + w, y + h)))
        chains.append(objects)
    return chains


def pil_render(chains, font) -> list[np.ndarray]:
    """The baseline: each layout drawn with PIL ImageDraw, outlines then labels, as uint8 arrays."""
    arrays = []
    for objects in chains:
        image = Image.new("RGB", (SIZE, SIZE), "white")
        draw = ImageDraw.Draw(image)
        boxes = layout_boxes(objects, SIZE).tolist()
        colors = [tuple(PALETTE[k % len(PALETTE)].tolist()) for k in range(len(objects))]
        for box, color in zip(boxes, colors):
            draw.rectangle(box, outline=color, width=LINE_WIDTH)
        for obj, box, color in zip(objects, boxes, colors):
            corner = (box[0], box[1])
            draw.rectangle(draw.textbbox(corner, obj.name, font=font), fill=color)
            draw.text(corner, obj.name, fill="white", font=font)
        arrays.append(np.asarray(image))
    return arrays


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: thread start-up, font caches, first-touch of reused buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 layouts, 3 repeats")
    parser.add_argument("--layouts", type=int, default=None, help="batch size (default 256, --quick 64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 9, --quick 3)")
    args = parser.parse_args()
    count = args.layouts or (64 if args.quick else 256)
    repeats = args.repeats or (3 if args.quick else 9)
    chains = make_chains(count)
    shape = (count, SIZE, SIZE, 3)
    nbytes = int(np.prod(shape))
    reused = np.empty(shape, dtype=np.uint8)
    bitmap_font, freetype_font = ImageFont.load_default_imagefont(), ImageFont.load_default(size=14)

    runs = {
        "memset floor: fill of a reused array": lambda: reused.fill(255),
        "memset floor: np.full, fresh array": lambda: np.full(shape, 255, dtype=np.uint8),
        "PIL ImageDraw, bitmap font": lambda: pil_render(chains, bitmap_font),
        "PIL ImageDraw, FreeType font": lambda: pil_render(chains, freetype_font),
        "gotr1 render_layouts, fresh array": lambda: render_layouts(chains, SIZE, LINE_WIDTH),
        "gotr1 render_layouts, out= reused": lambda: render_layouts(chains, SIZE, LINE_WIDTH, out=reused),
        "gotr1 render_layouts, out= reused, 1 thread": lambda: render_layouts(
            chains, SIZE, LINE_WIDTH, out=reused, threads=1
        ),
    }
    seconds = {name: median_seconds(fn, repeats) for name, fn in runs.items()}
    pil = min(seconds["PIL ImageDraw, bitmap font"], seconds["PIL ImageDraw, FreeType font"])
    fresh_floor = seconds["memset floor: np.full, fresh array"]
    reused_floor = seconds["memset floor: fill of a reused array"]

    cpu = platform.processor() or platform.machine()
    print(f"\n{count} layouts x {BOXES} labelled boxes, {SIZE}x{SIZE}, line width {LINE_WIDTH}; {nbytes / 1e6:.0f} MB "
          f"written; median of {repeats}; machine {platform.node()} ({os.cpu_count()} CPUs, {cpu})\n")
    print("| method | median ms | layouts/s | GB/s written | vs fastest PIL | x memset floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in seconds.items():
        floor = fresh_floor if "fresh" in name else reused_floor
        rate = f"{count / s:,.0f} | {nbytes / s / 1e9:.2f}"
        print(f"| {name} | {s * 1e3:.1f} | {rate} | {pil / s:.1f}x | {s / floor:.2f} |")


if __name__ == "__main__":
    main()
