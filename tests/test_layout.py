"""gotr1.layout and the C++ rasterizer: pixel parity with PIL, layout canvases, batches, bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from gotr1 import _canvas
from gotr1.chain import Box, ChainObject, parse_chain
from gotr1.layout import PALETTE, draw_rectangles, label_scale, layout_boxes, render_layout, render_layouts, to_pil

REPO = Path(__file__).resolve().parents[1]
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
LABEL_ROWS = 10  # font pixels in a label's height: 1 of padding, 7 to the baseline, 2 for descenders


def pil_rectangles(canvas, boxes, colors, width):
    """The reference: PIL's ImageDraw.rectangle, box after box, on a copy of the canvas."""
    image = Image.fromarray(canvas.copy())
    draw = ImageDraw.Draw(image)
    for box, color in zip(boxes, colors):
        draw.rectangle([int(v) for v in box], outline=tuple(int(c) for c in color), width=width)
    return np.asarray(image)


def random_canvas(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_same_as_pil(canvas, boxes, colors, width):
    expected = pil_rectangles(canvas, boxes, colors, width)
    got = draw_rectangles(canvas.copy(), boxes, colors, width)
    diff = np.argwhere(np.any(got != expected, axis=-1))
    assert diff.size == 0, f"{len(diff)} pixels differ from PIL, first (y, x) {diff[:5].tolist()}; {boxes=}, {width=}"


# ---------------------------------------------------------------------------------------------
# draw_rectangles against PIL
# ---------------------------------------------------------------------------------------------


@st.composite
def rectangle_cases(draw):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    extent = st.one_of(st.integers(0, 3), st.integers(0, 100))
    boxes = []
    for _ in range(draw(st.integers(1, 5))):
        x0, y0 = draw(st.integers(-50, 90)), draw(st.integers(-50, 90))
        boxes.append((x0, y0, x0 + draw(extent), y0 + draw(extent)))
    colors = draw(st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=len(boxes), max_size=len(boxes)))
    line = draw(st.one_of(st.integers(0, 4), st.integers(0, 60)))
    seed = draw(st.integers(0, 2**31))
    return height, width, np.array(boxes, dtype=np.int64), np.array(colors, dtype=np.uint8), line, seed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rectangle_cases())
def test_draw_rectangles_matches_pil_on_random_boxes(case):
    height, width, boxes, colors, line, seed = case
    assert_same_as_pil(random_canvas(height, width, seed), boxes, colors, line)


@pytest.mark.parametrize(
    "box",
    [
        (5, 5, 5, 5),  # a single pixel
        (2, 4, 9, 4),  # a horizontal line
        (4, 2, 4, 9),  # a vertical line
        (3, 3, 4, 4),  # 2x2, thinner than the line
        (0, 0, 11, 9),  # exactly the canvas
        (-5, -5, 20, 20),  # all edges outside, around the canvas
        (-8, 2, -1, 6),  # wholly left
        (12, 2, 30, 6),  # wholly right
        (2, -9, 6, -1),  # wholly above
        (2, 10, 6, 40),  # wholly below
        (-3, -3, 0, 0),  # only the far corner on the canvas
        (11, 9, 14, 12),  # only the near corner on the canvas
        (-100, 4, 100, 4),  # a line across the canvas
    ],
)
@pytest.mark.parametrize("line", [0, 1, 2, 3, 7, 25])
def test_draw_rectangles_matches_pil_on_degenerate_and_outside_boxes(box, line):
    assert_same_as_pil(random_canvas(10, 12, 1), np.array([box]), np.array([[10, 200, 30]], dtype=np.uint8), line)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (3, 5)])
def test_draw_rectangles_on_tiny_canvases(shape):
    boxes = np.array([[0, 0, 0, 0], [-1, -1, 1, 1], [0, 0, 20, 20], [2, 0, 3, 0]])
    colors = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], dtype=np.uint8)
    for line in (1, 2, 5):
        assert_same_as_pil(random_canvas(*shape, 2), boxes, colors, line)


def test_draw_rectangles_huge_coordinates_draw_the_clipped_geometry():
    canvas = random_canvas(10, 10, 3)
    colors = np.array([[255, 0, 0]], dtype=np.uint8)
    far = draw_rectangles(canvas.copy(), [[-(2**40), 3, 2**40, 6]], colors, width=2)
    assert np.array_equal(far, pil_rectangles(canvas, [[-1000, 3, 1000, 6]], colors, 2))
    whole = draw_rectangles(canvas.copy(), [[-10, -10, INT64_MAX, INT64_MAX]], colors, width=2**31 - 1)
    assert np.all(whole == colors[0]), "the top band of a 2**31 - 1 wide line covers the canvas"
    for box in ([INT64_MIN, INT64_MIN, INT64_MAX, INT64_MAX], [INT64_MAX] * 4, [INT64_MIN] * 4):
        untouched = draw_rectangles(canvas.copy(), [box], colors, width=2**31 - 1)
        assert np.array_equal(untouched, canvas), f"{box} leaves the canvas in its hollow or outside"


def test_draw_rectangles_accepts_integral_floats_and_other_integer_dtypes():
    canvas = random_canvas(16, 16, 4)
    boxes = np.array([[1, 2, 9, 12], [-3, 4, 5, 30]])
    colors = np.array([[9, 8, 7], [200, 100, 0]], dtype=np.uint8)
    expected = pil_rectangles(canvas, boxes, colors, 2)
    fortran_order = np.asfortranarray(boxes.astype(np.int32))
    for variant in (boxes.astype(np.float64), boxes.astype(np.int16), fortran_order, boxes.tolist()):
        assert np.array_equal(draw_rectangles(canvas.copy(), variant, colors.astype(np.int64), 2), expected)


def test_draw_rectangles_returns_the_canvas_and_draws_in_place():
    canvas = np.zeros((5, 5, 3), dtype=np.uint8)
    assert draw_rectangles(canvas, [[0, 0, 4, 4]], [[1, 1, 1]]) is canvas
    assert canvas[0, 0].tolist() == [1, 1, 1] and canvas[2, 2].tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------------------------
# Bad input: errors name the argument
# ---------------------------------------------------------------------------------------------

GOOD_CANVAS = np.zeros((8, 8, 3), dtype=np.uint8)
GOOD_BOXES = np.array([[1, 1, 5, 5]])
GOOD_COLORS = np.array([[1, 2, 3]], dtype=np.uint8)


def read_only_canvas():
    canvas = GOOD_CANVAS.copy()
    canvas.flags.writeable = False
    return canvas


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        (dict(canvas=GOOD_CANVAS.astype(np.float32)), TypeError, "canvas"),
        (dict(canvas=GOOD_CANVAS.tolist()), TypeError, "canvas"),
        (dict(canvas=GOOD_CANVAS[..., 0]), ValueError, "canvas"),
        (dict(canvas=np.zeros((8, 8, 4), np.uint8)), ValueError, "canvas"),
        (dict(canvas=np.zeros((8, 16, 3), np.uint8)[:, ::2]), ValueError, "canvas"),
        (dict(canvas=read_only_canvas()), ValueError, "canvas"),
        (dict(boxes=np.array([[1, 2, 3]])), ValueError, "boxes"),
        (dict(boxes=np.array([1, 2, 3, 4])), ValueError, "boxes"),
        (dict(boxes=np.array([["a", "b", "c", "d"]])), TypeError, "boxes"),
        (dict(boxes=np.array([[0.0, 0.0, np.nan, 2.0]])), ValueError, "boxes"),
        (dict(boxes=np.array([[0.0, 0.0, np.inf, 2.0]])), ValueError, "boxes"),
        (dict(boxes=np.array([[0.5, 0.0, 1.0, 2.0]])), ValueError, "boxes"),
        (dict(boxes=np.array([[0.0, 0.0, 1e300, 2.0]])), ValueError, "boxes"),
        (dict(boxes=np.array([[2**63, 0, 2**63, 0]], dtype=np.uint64)), ValueError, "boxes"),
        (dict(boxes=np.array([[5, 1, 4, 5]])), ValueError, "boxes"),  # reversed x, as in PIL
        (dict(boxes=np.array([[1, 5, 5, 4]])), ValueError, "boxes"),  # reversed y
        (dict(colors=np.array([[1, 2, 3], [4, 5, 6]], np.uint8)), ValueError, "colors"),
        (dict(colors=np.array([[1, 2, 300]])), ValueError, "colors"),
        (dict(colors=np.array([[1.0, 2.0, 3.0]])), TypeError, "colors"),
        (dict(width=-1), ValueError, "width"),
        (dict(width=2**31), ValueError, "width"),
        (dict(width=1.5), TypeError, "width"),
    ],
)
def test_draw_rectangles_rejects_bad_input_naming_it(kwargs, error, argument):
    args = dict(canvas=GOOD_CANVAS.copy(), boxes=GOOD_BOXES, colors=GOOD_COLORS, width=1) | kwargs
    with pytest.raises(error, match=argument):
        draw_rectangles(**args)


def test_bindings_check_layout_arguments_naming_them():
    out = np.zeros((2, 8, 8, 3), np.uint8)
    boxes, colors = np.array([[1, 1, 4, 4]]), np.array([[1, 2, 3]], np.uint8)
    good = dict(out=out, boxes=boxes, colors=colors, offsets=np.array([0, 1, 1]), labels=["a"], line_width=1,
                fill_alpha=0, label_scale=1, threads=0)
    _canvas.render_layouts(**good)
    for change, error, argument in [
        (dict(offsets=np.array([0, 1])), ValueError, "offsets"),
        (dict(offsets=np.array([0, 2, 1])), ValueError, "offsets"),
        (dict(offsets=np.array([1, 1, 1])), ValueError, "offsets"),
        (dict(offsets=np.array([0, 1, 1], np.int32)), TypeError, "offsets"),
        (dict(labels=["a", "b"]), ValueError, "labels"),
        (dict(labels=[3]), TypeError, "labels\\[0\\]"),
        (dict(labels="a"), TypeError, "labels"),
        (dict(out=out[:, :, :, :2]), ValueError, "out"),
        (dict(boxes=boxes.astype(np.int32)), TypeError, "boxes"),
        (dict(label_scale=0), ValueError, "label_scale"),
        (dict(fill_alpha=256), ValueError, "fill_alpha"),
        (dict(threads=-1), ValueError, "threads"),
    ]:
        with pytest.raises(error, match=argument):
            _canvas.render_layouts(**(good | change))


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: render_layouts("a chain"), TypeError, "chains"),
        (lambda: render_layouts([1]), TypeError, r"chains\[0\]"),
        (lambda: render_layout("text"), TypeError, "chain"),
        (lambda: render_layouts([[]], size=0), ValueError, "size"),
        (lambda: render_layouts([[]], size=2.5), ValueError, "size"),
        (lambda: render_layouts([[]], line_width=-1), ValueError, "line_width"),
        (lambda: render_layouts([[]], fill_alpha=300), ValueError, "fill_alpha"),
        (lambda: render_layouts([[]], threads=-2), ValueError, "threads"),
        (lambda: render_layouts([[]], size=8, out=np.zeros((2, 8, 8, 3), np.uint8)), ValueError, "out"),
        (lambda: render_layouts([[]], size=8, out=np.zeros((1, 8, 8, 3), np.float32)), TypeError, "out"),
        (lambda: to_pil(np.zeros((4, 4), np.uint8)), ValueError, "array"),
    ],
)
def test_layout_functions_reject_bad_input_naming_it(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# ---------------------------------------------------------------------------------------------
# Layout canvases
# ---------------------------------------------------------------------------------------------

QUADRANTS = [
    ChainObject("red apple", Box(50, 50, 450, 450)),
    ChainObject("blue cup", Box(550, 50, 950, 450)),
    ChainObject("green pear", Box(50, 550, 450, 950)),
    ChainObject("a café ☕", Box(550, 550, 950, 950)),
]


def test_layout_boxes_make_the_far_edge_inclusive_and_clip():
    objects = [ChainObject("a", Box(0, 0, 1000, 1000)), ChainObject("b", Box(500, 250, 500, 250)),
               ChainObject("c", Box(1000, 1000, 1000, 1000)), ChainObject("d", Box(100, 200, 300, 400))]
    assert layout_boxes(objects, 384).tolist() == [[0, 0, 383, 383], [192, 96, 192, 96], [383, 383, 383, 383],
                                                   [38, 77, 114, 153]]


def test_render_layout_without_labels_equals_pil():
    objects = [ChainObject(f"o{k}", Box(37 * k % 900, 53 * k % 800, 37 * k % 900 + 100, 1000)) for k in range(14)]
    for size, line in [(384, 3), (97, 1), (64, 9)]:
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        for k, box in enumerate(layout_boxes(objects, size)):
            draw.rectangle(box.tolist(), outline=tuple(PALETTE[k % len(PALETTE)].tolist()), width=line)
        assert np.array_equal(render_layout(objects, size, line, labels=False), np.asarray(image))


def test_render_layout_draws_each_colour_on_its_outline_and_labels_at_the_top_left():
    size = 384
    plain = render_layout(QUADRANTS, size, labels=False)
    labelled = render_layout(QUADRANTS, size)
    assert labelled.shape == (size, size, 3) and labelled.dtype == np.uint8
    label_height = LABEL_ROWS * label_scale(size)
    for k, (x0, y0, x1, y1) in enumerate(layout_boxes(QUADRANTS, size)):
        color = PALETTE[k]
        assert np.all(labelled[y1, x0 : x1 + 1] == color), f"bottom edge of box {k}"
        assert np.all(labelled[y0 + label_height : y1 + 1, x1] == color), f"right edge of box {k}"
        label = labelled[y0 : y0 + label_height, x0 : x0 + 40]
        is_background = np.all(label == color, axis=-1)
        is_text = np.all(label == 0, axis=-1) | np.all(label == 255, axis=-1)  # black or white, by contrast
        assert is_background.mean() > 0.4 and (~is_background).sum() > 20, f"label {k} has background and text"
        assert np.all(is_background | is_text), f"label {k} holds only its background and text colours"
        assert np.all(plain[y0 + 4 : y0 + label_height, x0 + 4 : x0 + 40] == 255), "no label without labels=True"
    outside = np.ones((size, size), bool)
    for x0, y0, _, _ in layout_boxes(QUADRANTS, size):
        outside[y0 : y0 + label_height, x0 : x0 + 200] = False
    assert np.array_equal(labelled[outside], plain[outside]), "labels change nothing but their own area"


def test_labels_stay_inside_the_canvas_and_do_not_cover_each_other():
    corner = [ChainObject("x" * 5, Box(990, 995, 1000, 1000))]
    image = render_layout(corner, 128)
    h, w = LABEL_ROWS * label_scale(128), (5 * 6 + 1) * label_scale(128)
    assert np.all(image[-h:, -w:] != 255, axis=-1).mean() > 0.5, "bottom-right label moved inside the canvas"
    shared = [ChainObject("first", Box(100, 100, 900, 900)), ChainObject("second", Box(100, 100, 500, 500))]
    image = render_layout(shared, 384)
    x0, y0 = layout_boxes(shared, 384)[0, :2]
    h = LABEL_ROWS * label_scale(384)
    assert np.all(image[y0 : y0 + 2, x0 : x0 + 60] == PALETTE[0]), "first label keeps the corner"
    assert np.all(image[y0 + h : y0 + h + 2, x0 : x0 + 60] == PALETTE[1]), "second label goes below the first"


def test_labels_draw_non_ascii_as_the_placeholder():
    def label(name):
        return render_layout([ChainObject(name, Box(100, 100, 900, 900))], 256)

    assert np.array_equal(label("é"), label("\u2615")), "every non-ASCII character is the same hollow box"
    assert np.array_equal(label("é"), label("\x7f")), "as is a non-printable ASCII character"
    assert not np.array_equal(label("é"), label("e"))
    out = np.empty((2, 64, 64, 3), np.uint8)
    boxes, colors = np.array([[4, 4, 60, 60]] * 2), np.array([[0, 0, 128]] * 2, np.uint8)
    bad_utf8 = [b"\xff\xfe", "\ud800\udfff"]  # two invalid bytes; two lone surrogates
    _canvas.render_layouts(out, boxes, colors, np.array([0, 1, 2]), bad_utf8, 1, 0, 1, 1)
    expected = np.empty_like(out[:1])
    _canvas.render_layouts(expected, boxes[:1], colors[:1], np.array([0, 1]), ["é\u2615"], 1, 0, 1, 1)
    assert np.array_equal(out[0], expected[0]) and np.array_equal(out[1], expected[0])


def test_fill_alpha_blends_the_box_colour_over_white():
    objects = [ChainObject("box", Box(100, 100, 900, 900))]
    image = render_layout(objects, 100, labels=False, fill_alpha=64)
    expected = (64 * PALETTE[0].astype(int) + (255 - 64) * 255 + 127) // 255
    assert image[50, 50].tolist() == expected.tolist()
    assert np.all(image[5, 5] == 255), "outside the box stays white"


def random_chains(count, seed):
    rng = np.random.default_rng(seed)
    words = ["cat", "dog", "red car", "tree", "a lamp", "blue sky", "cafe", "Zebra 2", "ümlaut"]
    chains = []
    for _ in range(count):
        objects = []
        for _ in range(rng.integers(0, 15)):
            x0, y0 = rng.integers(0, 1001, 2)
            box = Box(int(x0), int(y0), int(rng.integers(x0, 1001)), int(rng.integers(y0, 1001)))
            objects.append(ChainObject(str(rng.choice(words)), box))
        chains.append(objects)
    return chains


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_batch_equals_single_renders(threads):
    chains = random_chains(9, seed=5)
    expected = np.stack([render_layout(c, 96, 2, fill_alpha=40) for c in chains])
    out = np.full((9, 96, 96, 3), 7, np.uint8)
    got = render_layouts(chains, 96, 2, fill_alpha=40, out=out, threads=threads)
    assert got is out and np.array_equal(got, expected)
    assert render_layouts([], 32).shape == (0, 32, 32, 3)


def test_render_layout_of_a_parsed_chain_and_to_pil():
    chain = parse_chain(
        "A <|obj_start|>vibrant still life painting<|obj_end|> <|box_start|>(0,60),(997,983)<|box_end|> showcases a "
        "<|obj_start|>bouquet of red tulips<|obj_end|> <|box_start|>(0,60),(698,780)<|box_end|> in a "
        "<|obj_start|>yellow vase<|obj_end|> <|box_start|>(65,488),(582,982)<|box_end|>, adorned with a floral pattern."
    )
    image = render_layout(chain)
    assert np.array_equal(image, render_layout(chain.objects))
    pil = to_pil(image)
    assert pil.mode == "RGB" and pil.size == (384, 384) and np.array_equal(np.asarray(pil), image)
    assert np.all(render_layout(parse_chain("no objects here"), 16) == 255)


def test_font_header_is_generated_from_the_drawings():
    command = [sys.executable, str(REPO / "csrc" / "gen_font.py"), "--check"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_font_glyphs_are_distinct():
    images = {}
    for name in ["A", "a", "0", "O", "o", "l", "1", "I", "|", "!", ".", ",", "g", "q", "9", "5", "S", "s", "x", "X"]:
        images[name] = render_layout([ChainObject(name, Box(0, 0, 1000, 1000))], 64, labels=True).tobytes()
    assert len(set(images.values())) == len(images), "glyphs that look alike must still differ"
