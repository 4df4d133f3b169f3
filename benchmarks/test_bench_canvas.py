"""Canvas: ``render_layouts`` against PIL ImageDraw on ``bench_canvas.py``'s workload (64 layouts, CPU)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from bench_canvas import BOXES, LINE_WIDTH, SIZE, make_chains, pil_render
from PIL import ImageFont
from suite import record

from gotr1.layout import render_layouts

LAYOUTS = 64
BASELINE = "PIL ImageDraw, bitmap font"
RUNS = {
    BASELINE: lambda chains, out, font: pil_render(chains, font),
    "gotr1 render_layouts, fresh array": lambda chains, out, font: render_layouts(chains, SIZE, LINE_WIDTH),
    "gotr1 render_layouts, out= reused": lambda chains, out, font: render_layouts(chains, SIZE, LINE_WIDTH, out=out),
}


@functools.cache
def workload():
    """The chains, a reused output array and PIL's bitmap font, built once per process."""
    return make_chains(LAYOUTS), np.empty((LAYOUTS, SIZE, SIZE, 3), dtype=np.uint8), ImageFont.load_default_imagefont()


@pytest.mark.benchmark(group="canvas")
@pytest.mark.parametrize("case", list(RUNS))
def test_canvas(benchmark, case):
    chains, out, font = workload()
    record(benchmark, case, BASELINE, out.shape, "cpu", bytes=out.nbytes, items=LAYOUTS, boxes=BOXES)
    arrays = benchmark(RUNS[case], chains, out, font)
    assert len(arrays) == LAYOUTS and np.asarray(arrays[0]).shape == (SIZE, SIZE, 3)
