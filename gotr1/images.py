"""Images as every scorer takes them: uint8 RGB arrays ``[H, W, 3]`` from arrays or PIL images."""

from __future__ import annotations

import numpy as np


def as_rgb_array(image) -> np.ndarray:
    """A PIL image or an array ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` as uint8 RGB ``[H, W, 3]``."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image must have shape [H, W, 3], got {array.shape}")
    return np.ascontiguousarray(array[..., :3])


def image_size(image) -> tuple[int, int]:
    """``(width, height)`` of a PIL image or an array ``[H, W, ...]``."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray):
        return tuple(image.size)
    shape = np.shape(image)
    return int(shape[1]), int(shape[0])
