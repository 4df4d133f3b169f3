"""Layout canvases: a chain's boxes drawn on a blank image with each object's name at its top-left.

The spatial reward (R_spa, GoT-R1 arXiv 2505.17022) shows the judge this canvas instead of the raw
coordinates. Drawing happens in the C++ module ``gotr1._canvas`` with the GIL released, a batch
spread over threads. Outlines colour exactly the pixels PIL's ``ImageDraw.rectangle`` colours, so
that a canvas drawn here and one drawn with PIL cannot be told apart; labels use gotr1's own
5x9 bitmap font (``csrc/gen_font.py``) rather than PIL's fonts. The paper specifies only boxes with
names at their top-left corners; the palette, the font, the label backgrounds and moving a label
below an earlier one it would cover are gotr1's choices.

Example::

    from gotr1.chain import parse_chain
    from gotr1.layout import render_layout, to_pil

    chain = parse_chain("a <|obj_start|>cat<|obj_end|> <|box_start|>(100,200),(600,900)<|box_end|>")
    to_pil(render_layout(chain)).save("layout.png")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from gotr1.chain import Chain, ChainObject


def _native():
    """The compiled rasterizer ``gotr1._canvas``. Imported on first use: a source tree put on ``sys.path`` without
    building it (``benchmarks/gpu_check.sh`` on a machine without build tools) runs everything but the canvas."""
    try:
        from gotr1 import _canvas
    except ImportError as err:
        raise ImportError("gotr1._canvas, the compiled box rasterizer, is not built: install gotr1 (`python -m pip "
                          "install --no-build-isolation -e .` from the repository needs cmake, a C++17 compiler and "
                          "pybind11)") from err
    return _canvas


# Distinct, saturated colours that stay readable on white; object k gets PALETTE[k % len(PALETTE)].
# A larger canvas is a typo, not a layout: 8192 px per side is already 200 MB per image.
MAX_CANVAS_SIZE = 8192
PALETTE = np.array(
    [
        (220, 20, 60),  # crimson
        (0, 114, 178),  # blue
        (0, 158, 115),  # green
        (230, 140, 0),  # orange
        (148, 0, 211),  # violet
        (86, 180, 233),  # sky blue
        (213, 94, 0),  # vermilion
        (204, 121, 167),  # pink
        (128, 128, 0),  # olive
        (0, 0, 128),  # navy
        (139, 69, 19),  # brown
        (0, 139, 139),  # teal
    ],
    dtype=np.uint8,
)

_INT64 = np.iinfo(np.int64)


def _as_boxes(boxes) -> np.ndarray:
    """``boxes`` as C-contiguous int64 ``[K, 4]``; integral floats are accepted, NaN/inf/fractions are not."""
    array = np.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape [K, 4] (x0, y0, x1, y1), got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("boxes must hold finite integer pixel coordinates, got NaN, inf or a fraction")
        if array.size and (array.min() < _INT64.min or array.max() >= 2.0**63):
            raise ValueError(f"boxes coordinates must fit in int64, got range [{array.min()}, {array.max()}]")
    elif array.dtype.kind == "u":
        if array.size and array.max() > _INT64.max:
            raise ValueError(f"boxes coordinates must fit in int64, got {array.max()}")
    elif array.dtype.kind != "i":
        raise TypeError(f"boxes must be an integer array [K, 4], got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _as_colors(colors, count: int) -> np.ndarray:
    """``colors`` as C-contiguous uint8 ``[count, 3]``; integer values must lie in [0, 255]."""
    array = np.asarray(colors)
    if array.shape != (count, 3):
        raise ValueError(f"colors must have shape [K, 3] = ({count}, 3) to match boxes, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise TypeError(f"colors must be uint8 (or integers in [0, 255]), got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"colors must lie in [0, 255], got range [{array.min()}, {array.max()}]")
    return np.ascontiguousarray(array, dtype=np.uint8)


def draw_rectangles(canvas: np.ndarray, boxes, colors, width: int = 1) -> np.ndarray:
    """Draw rectangle outlines onto ``canvas`` in place, pixel-identical to PIL.

    Box ``k`` colours exactly the pixels ``ImageDraw.Draw(img).rectangle(list(boxes[k]),
    outline=tuple(colors[k]), width=width)`` colours on the same image, boxes drawn in order: ``width``
    nested one-pixel rings grown inwards from the corners, which overshoot the box when ``width``
    exceeds it. Boxes partly or wholly outside the canvas are clipped.

    Parameters
    ----------
    canvas : np.ndarray
        uint8 ``[H, W, 3]`` RGB, C-contiguous and writeable; modified in place.
    boxes : array_like
        Integers ``[K, 4]``, inclusive pixel corners ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and
        ``y0 <= y1``. Reversed corners raise ``ValueError``, as PIL does. Any int64 value is safe;
        beyond PIL's 32-bit range PIL draws nothing while this draws the exact clipped geometry.
    colors : array_like
        ``[K, 3]`` RGB, uint8 or integers in [0, 255].
    width : int
        Line width in pixels, in [0, 2**31 - 1]; 0 draws nothing (as in PIL).

    Returns
    -------
    np.ndarray
        ``canvas``.
    """
    boxes = _as_boxes(boxes)
    _native().draw_rectangles(canvas, boxes, _as_colors(colors, len(boxes)), width)
    return canvas


def _objects(chain, argument: str) -> Sequence[ChainObject]:
    """The objects of a Chain or a list of ChainObject; anything else is a TypeError naming `argument`."""
    if isinstance(chain, Chain):
        return chain.objects
    if isinstance(chain, (list, tuple)) and all(isinstance(o, ChainObject) for o in chain):
        return chain
    raise TypeError(f"{argument} must be a Chain or a list of ChainObject, got {type(chain).__name__}")


def layout_boxes(objects: Sequence[ChainObject], size: int) -> np.ndarray:
    """Inclusive pixel corners int64 ``[K, 4]`` of the objects' boxes on a ``size`` x ``size`` canvas.

    ``Box.to_pixels`` gives edges in [0, size]; the far edges become inclusive pixels (``x1 - 1``,
    ``y1 - 1``) and every corner is clipped into the canvas and kept ordered, so an empty box
    (``x1 == x0``) still shows as a line one pixel wide and a box at 1000 lands on the last pixel.
    """
    edges = np.array([o.box.to_pixels(size, size) for o in objects], dtype=np.int64).reshape(-1, 4)
    near = np.minimum(edges[:, :2], size - 1)
    far = np.maximum(np.minimum(edges[:, 2:] - 1, size - 1), near)
    return np.concatenate([near, far], axis=1)


def label_scale(size: int) -> int:
    """Font pixels per glyph pixel on a ``size``-pixel canvas: 2 at 384 (labels 20 px tall), 1 below 288."""
    return max(1, min(_native().MAX_LABEL_SCALE, round(size / 192)))


def render_layouts(
    chains: Sequence,
    size: int = 384,
    line_width: int = 3,
    labels: bool = True,
    *,
    fill_alpha: int = 0,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Render the layout canvas of each chain, in one call to the C++ rasterizer.

    Each canvas is white; object ``k`` of a chain is drawn in ``PALETTE[k % len(PALETTE)]``: an
    optional translucent fill, its outline (the PIL-exact :func:`draw_rectangles` of
    :func:`layout_boxes`), then, above all outlines, its name at the box's top-left corner in
    black or white on a filled background of the box colour, moved inside the canvas if needed and
    below any earlier label it would cover (as long as it then still fits).
    Characters outside printable ASCII are drawn as hollow boxes.

    Parameters
    ----------
    chains : sequence of Chain or list[ChainObject]
        ``N`` layouts.
    size : int
        Canvas side in pixels.
    line_width : int
        Outline width in pixels (0 for no outlines).
    labels : bool
        Draw the object names.
    fill_alpha : int
        Opacity in [0, 255] of a fill in the box colour under each outline; 0 for none.
    out : np.ndarray, optional
        uint8 ``[N, size, size, 3]`` C-contiguous buffer to draw into (reused across calls it saves
        the page faults of a fresh allocation); allocated when omitted.
    threads : int, optional
        Worker threads; default ``min(N, CPU count)``.

    Returns
    -------
    np.ndarray
        uint8 ``[N, size, size, 3]``: ``out`` when given.
    """
    if isinstance(chains, (Chain, str)) or not isinstance(chains, Sequence):
        raise TypeError(f"chains must be a list of Chain (use render_layout for one), got {type(chains).__name__}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_CANVAS_SIZE:
        raise ValueError(f"size must be an int number of pixels in [1, {MAX_CANVAS_SIZE}], got {size!r}")
    size = int(size)
    objects = [_objects(chain, f"chains[{i}]") for i, chain in enumerate(chains)]
    counts = [len(objs) for objs in objects]
    offsets = np.zeros(len(objects) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = [obj for objs in objects for obj in objs]
    boxes = layout_boxes(flat, size)
    rank = np.concatenate([np.arange(c) for c in counts]) if flat else np.zeros(0, dtype=np.int64)
    colors = PALETTE[rank % len(PALETTE)]
    names = [obj.name for obj in flat] if labels else None
    if out is None:
        out = np.empty((len(objects), size, size, 3), dtype=np.uint8)
    elif isinstance(out, np.ndarray) and out.shape != (len(objects), size, size, 3):
        raise ValueError(f"out must have shape [N, size, size, 3] = {(len(objects), size, size, 3)}, got {out.shape}")
    _native().render_layouts(
        out, boxes, colors, offsets, names, line_width, fill_alpha, label_scale(size), 0 if threads is None else threads
    )
    return out


def render_layout(
    chain, size: int = 384, line_width: int = 3, labels: bool = True, *, fill_alpha: int = 0
) -> np.ndarray:
    """The layout canvas of one chain: uint8 ``[size, size, 3]``; see :func:`render_layouts`.

    ``chain`` is a :class:`~gotr1.chain.Chain` or a list of :class:`~gotr1.chain.ChainObject`.
    """
    return render_layouts([_objects(chain, "chain")], size, line_width, labels, fill_alpha=fill_alpha, threads=1)[0]


def to_pil(array: np.ndarray) -> Image.Image:
    """A PIL RGB image of a uint8 ``[H, W, 3]`` canvas (copied)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"array must be uint8 [H, W, 3], got dtype {array.dtype} and shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))
