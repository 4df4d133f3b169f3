"""Hostile-input fuzz of the C++ rasterizer bindings (``gotr1._canvas``), meant for a sanitizer build.

Every call either raises TypeError/ValueError or draws; it must never touch memory outside the
buffer it was given. Half the canvases sit between guard bands of a larger allocation that must
come back untouched, which catches stray writes in any build; the others are allocations of their
own, whose neighbours AddressSanitizer poisons. Run under AddressSanitizer + UBSan (build from
/tmp; libstdc++ is preloaded too, or ASan cannot intercept the C++ exceptions that carry errors):

    cd /tmp && GOTR1_ASAN=ON pip install --no-build-isolation -e /work/main
    cd /work/main && LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \\
        ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \\
        python -m pytest tests/test_canvas_fuzz.py -m slow -q -s -p no:cacheprovider  # -s: reports reach stderr
    cd /tmp && pip install --no-build-isolation -e /work/main   # back to the optimised build
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gotr1 import _canvas

pytestmark = pytest.mark.slow

GUARD = 64
SENTINEL = 0xA5
INT64 = st.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max)
COORD = st.one_of(st.integers(-40, 80), INT64, st.sampled_from([0, -1, 2**31 - 1, -(2**31), 2**62, -(2**62)]))
WEIRD = st.one_of(st.none(), st.text(max_size=3), st.floats(), st.lists(st.integers(), max_size=3), st.just(object()))
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


def guarded(shape, exact):
    """A zero-filled C-contiguous uint8 array of `shape`: its own allocation if `exact`, else the
    middle of a buffer whose ends hold SENTINEL. Returns (buffer, array)."""
    size = int(np.prod(shape))
    if exact:
        array = np.zeros(shape, dtype=np.uint8)
        return array, array
    buffer = np.full(size + 2 * GUARD, SENTINEL, dtype=np.uint8)
    buffer[GUARD : GUARD + size] = 0
    return buffer, buffer[GUARD : GUARD + size].reshape(shape)


def assert_guards_intact(buffer, exact):
    if not exact:
        assert np.all(buffer[:GUARD] == SENTINEL) and np.all(buffer[-GUARD:] == SENTINEL), "write outside the canvas"


@st.composite
def boxes_and_colors(draw, max_boxes=8):
    count = draw(st.integers(0, max_boxes))
    rows = [sorted(draw(st.tuples(COORD, COORD))) + sorted(draw(st.tuples(COORD, COORD))) for _ in range(count)]
    boxes = np.array([[r[0], r[2], r[1], r[3]] for r in rows], dtype=np.int64).reshape(-1, 4)
    if draw(st.booleans()) and count:  # sometimes reverse a corner pair: must raise, not draw
        k = draw(st.integers(0, count - 1))
        if boxes[k, 0] != boxes[k, 2]:
            boxes[k, [0, 2]] = boxes[k, [2, 0]]
    colors = np.array(draw(st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=count, max_size=count)), np.uint8)
    return boxes, colors.reshape(-1, 3)


LABEL = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # any code point, surrogates included
    st.binary(max_size=40),
    st.text(max_size=600),
)


@FUZZ
@given(
    shape=st.tuples(st.integers(0, 24), st.integers(0, 24)),
    data=boxes_and_colors(),
    width=st.one_of(st.integers(-3, 40), st.integers(-(2**70), 2**70), st.sampled_from([2**31 - 1, 2**31])),
    exact=st.booleans(),
)
def test_draw_rectangles_never_writes_outside(shape, data, width, exact):
    buffer, canvas = guarded((*shape, 3), exact)
    boxes, colors = data
    try:
        _canvas.draw_rectangles(canvas, boxes, colors, width)
    except ValueError as error:
        assert "boxes" in str(error) or "width" in str(error)
    assert_guards_intact(buffer, exact)


@FUZZ
@given(
    images=st.tuples(st.integers(0, 4), st.integers(0, 40), st.integers(0, 40)),
    data=boxes_and_colors(max_boxes=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
    labels=st.one_of(st.none(), st.lists(LABEL, min_size=12, max_size=12)),
    line_width=st.one_of(st.integers(0, 30), st.integers(-5, 2**40)),
    fill_alpha=st.integers(-5, 300),
    label_scale=st.integers(-1, 70),
    threads=st.integers(-1, 9),
    exact=st.booleans(),
)
@example(  # once found by UBSan: a fill of a box right of the image formed an out-of-range pointer
    images=(1, 8, 8), data=(np.array([[2**62, 0, 2**62, 5]]), np.array([[1, 2, 3]], np.uint8)), cuts=[],
    labels=None, line_width=1, fill_alpha=128, label_scale=1, threads=1, exact=True,
)
def test_render_layouts_never_writes_outside(
    images, data, cuts, labels, line_width, fill_alpha, label_scale, threads, exact
):
    count, height, width = images
    buffer, out = guarded((count, height, width, 3), exact)
    boxes, colors = data
    inner = sorted(c % (len(boxes) + 1) for c in cuts[: max(count - 1, 0)])
    offsets = np.array([0, *inner, len(boxes)] if count else [0], np.int64)  # wrong length when cuts run short
    if labels is not None:
        labels = labels[: len(boxes)]
    try:
        _canvas.render_layouts(out, boxes, colors, offsets, labels, line_width, fill_alpha, label_scale, threads)
    except ValueError as error:
        named = ("boxes", "offsets", "line_width", "fill_alpha", "label_scale", "threads")
        assert any(name in str(error) for name in named), error
    assert_guards_intact(buffer, exact)


@FUZZ
@given(argument=st.sampled_from(["canvas", "boxes", "colors", "width"]), value=WEIRD)
def test_draw_rectangles_rejects_non_arrays(argument, value):
    good = dict(canvas=np.zeros((4, 4, 3), np.uint8), boxes=np.zeros((1, 4), np.int64), width=1)
    good["colors"] = np.zeros((1, 3), np.uint8)
    with pytest.raises((TypeError, ValueError), match=argument):
        _canvas.draw_rectangles(**(good | {argument: value}))


@FUZZ
@given(
    shape=st.lists(st.integers(0, 5), max_size=5),
    dtype=st.sampled_from([np.uint8, np.int8, np.int64, np.float32, np.bool_, np.uint16]),
    order=st.sampled_from(["C", "F", "strided", "readonly"]),
)
def test_odd_canvases_are_rejected_or_drawn(shape, dtype, order):
    if order == "strided" and shape:
        array = np.zeros([*shape[:-1], 2 * shape[-1]], dtype)[..., ::2]
    else:
        array = np.zeros(shape, dtype)
    if order == "F":
        array = np.asfortranarray(array)
    elif order == "readonly":
        array.flags.writeable = False
    try:
        _canvas.draw_rectangles(array, np.array([[0, 0, 3, 3]]), np.array([[9, 9, 9]], np.uint8), 2)
    except (TypeError, ValueError) as error:
        assert "canvas" in str(error)
        return
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.flags.c_contiguous and array.flags.writeable
