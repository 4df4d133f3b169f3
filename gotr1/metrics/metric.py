"""What every evaluator metric is: a batched ``score(prompts, images) -> float64 [N]``, loadable by id.

A metric (BLIP-VQA, CLIPScore, the detector's spatial score, GenEval's correctness) is a class with
``from_pretrained(path_or_id, device, dtype)`` and ``score(prompts, images)``: one float64 per image in
[0, 1], NaN where the image cannot be scored (the metric does not apply to that prompt). The same object
can serve as a GRPO reward. Models load through transformers only; a model that cannot be loaded (an id
with no network, a wrong folder) raises :class:`MetricLoadError` naming the metric and the id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gotr1.images import as_rgb_array


class MetricLoadError(OSError):
    """An evaluator's model could not be loaded; the message names the metric and the id."""


class Metric:
    """Base of the evaluator metrics: ``score(prompts, images) -> float64 [N]`` (NaN: not scorable)."""

    name = "metric"
    """Short name written into ``scores.jsonl``."""
    source: str | None = None
    """The hub id or folder the model was loaded from (set by ``from_pretrained``), for ``summary.json``."""

    def score(self, prompts: list[str], images) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, prompts: list[str], images) -> np.ndarray:
        return self.score(prompts, images)

    def describe(self) -> str:
        """What ran, for ``summary.json`` (e.g. the model id, or which noun-phrase chunker)."""
        return self.name


def load_model(metric: str, path_or_id: str, load):
    """``load()`` (a transformers ``from_pretrained`` call), its failure re-raised as :class:`MetricLoadError`."""
    try:
        return load()
    except Exception as err:  # hub errors, missing files, wrong architectures all mean the same to the user
        raise MetricLoadError(
            f"{metric}: cannot load {path_or_id!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "give a local folder holding the model, or run where the hub can be reached"
        ) from err


def rgb_images(images) -> list[np.ndarray]:
    """Images as a list of uint8 ``[H, W, 3]`` arrays: from an array ``[N, H, W, 3]``, arrays, PIL images or paths."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [as_rgb_array(image) for image in images]
    out = []
    for image in images:
        if isinstance(image, (str, Path)):
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        out.append(as_rgb_array(image))
    return out


def check_batch(prompts: list[str], images: list) -> None:
    """Refuse a batch whose prompts and images do not pair up, naming both counts."""
    if isinstance(prompts, str):
        raise TypeError("prompts: expected a list of str, got one str")
    if len(prompts) != len(images):
        raise ValueError(f"prompts and images: {len(prompts)} prompts for {len(images)} images")
