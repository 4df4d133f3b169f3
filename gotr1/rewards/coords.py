"""Coordinate systems of the grounding reward: Qwen2.5-VL's resized-pixel answers against 0-1000 chain boxes.

Qwen2.5-VL answers a grounding question in absolute pixels of the image *as its processor resized it*,
not of the image we sent and not on a 0-1000 scale. Its processor resizes with ``smart_resize``: both
sides become multiples of ``factor`` = patch size 14 x spatial merge 2 = 28, the aspect ratio is kept as
closely as possible, and the pixel count is brought into ``[min_pixels, max_pixels]`` (Qwen2.5-VL-7B's
released processor: 3136 and 12845056). A 384 x 384 GoT image is therefore seen, and answered about, as
392 x 392. R_RI maps the answer to 0-1000 with that resized size, then compares it with the chain's box.
"""

from __future__ import annotations

import math

import numpy as np

from gotr1.chain import COORD_MAX, box_iou

QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384
MAX_ASPECT = 200


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """The ``(height, width)`` Qwen2-VL / Qwen2.5-VL processors resize an image to.

    Each side is first rounded to the nearest multiple of ``factor``. If that exceeds ``max_pixels``, both
    sides are divided by ``sqrt(h * w / max_pixels)`` and rounded *down* to multiples of ``factor`` (at
    least ``factor``); if it falls below ``min_pixels``, both are multiplied by ``sqrt(min_pixels / (h * w))``
    and rounded *up*. Aspect ratios beyond 200:1 are rejected, as the processor does.

    Parameters
    ----------
    height, width : int
        The image size as sent, in pixels (positive).
    factor : int
        Patch size times spatial merge size (28 for Qwen2.5-VL).
    min_pixels, max_pixels : int
        Bounds on the resized pixel count (the processor's ``min_pixels`` / ``max_pixels``).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"smart_resize needs a positive size, got height={height}, width={width}")
    if factor <= 0 or min_pixels <= 0 or max_pixels < min_pixels:
        raise ValueError(f"smart_resize got factor={factor}, min_pixels={min_pixels}, max_pixels={max_pixels}")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(f"smart_resize: aspect ratio of {height}x{width} exceeds {MAX_ASPECT}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def pixels_to_unit(boxes, width: int, height: int) -> np.ndarray:
    """Pixel boxes of a ``width`` x ``height`` frame on the chain's 0-1000 scale.

    Parameters
    ----------
    boxes : array-like ``[K, 4]``
        (x1, y1, x2, y2) in pixels of the frame the judge saw (its resized input).
    width, height : int
        That frame's size.

    Returns
    -------
    np.ndarray float64 ``[K, 4]``
        ``x * 1000 / width`` and ``y * 1000 / height``, clipped to [0, 1000] (answers spilling past the
        frame are cut at its edge).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"pixels_to_unit needs a positive frame, got width={width}, height={height}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes * COORD_MAX / scale, 0.0, COORD_MAX)


def best_iou(chain_boxes, grounded_unit_boxes) -> np.ndarray:
    """For each chain box, its IoU with the best-matching grounded box (0 when none was grounded).

    Parameters
    ----------
    chain_boxes : array-like ``[K, 4]`` on 0-1000
    grounded_unit_boxes : array-like ``[M, 4]`` on 0-1000 (M may be 0)

    Returns
    -------
    np.ndarray float64 ``[K]``
    """
    chain_boxes = np.asarray(chain_boxes, dtype=np.float64).reshape(-1, 4)
    grounded = np.asarray(grounded_unit_boxes, dtype=np.float64).reshape(-1, 4)
    if len(grounded) == 0:
        return np.zeros(len(chain_boxes))
    return box_iou(chain_boxes[:, None], grounded[None, :]).max(axis=1)
