"""3_in_1.py's rule (``3_in_1_eval/3_in_1.py`` of T2I-CompBench): which sub-scores a complex prompt averages.

The official script reads the shipped ``complex_val_spatial.txt`` and ``complex_val_action.txt`` (keys: the
text before the first ".", lower-cased) and averages, per image, BLIP-VQA (attribute) with the 2D-spatial
score for a spatial prompt, with CLIP (action) for an action prompt, and all three for any other prompt
(the spatial-action list is not read: its prompts fall to the last case, as every unlisted prompt does).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import numpy as np


@lru_cache(maxsize=1)
def _complex_lists() -> tuple[frozenset, frozenset]:
    """3_in_1.py's keys of complex_val_spatial.txt and complex_val_action.txt (text before the first '.', lower)."""
    folder = files("gotr1").joinpath("assets/t2i_compbench")
    return tuple(
        frozenset(_complex_key(line) for line in folder.joinpath(name).read_text(encoding="utf-8").splitlines())
        for name in ("complex_val_spatial.txt", "complex_val_action.txt")
    )


def _complex_key(prompt: str) -> str:
    return prompt.strip().split(".")[0].lower()


def complex_kind(prompt: str) -> str:
    """Which sub-scores 3_in_1.py averages: ``"spatial"``, ``"action"`` or ``"spatial_action"`` (all three).

    A prompt of the shipped spatial list is spatial, else one of the action list is action, else any other
    prompt (the spatial-action list and prompts outside the lists) gets all three.
    """
    spatial, action = _complex_lists()
    key = _complex_key(prompt)
    return "spatial" if key in spatial else "action" if key in action else "spatial_action"


def three_in_one(kinds: list[str], attribute, action, spatial) -> np.ndarray:
    """3_in_1.py's mean per image: (spatial + attribute) / 2, (action + attribute) / 2, or all three / 3.

    Parameters
    ----------
    kinds : list of str
        :func:`complex_kind` per image.
    attribute, action, spatial : array_like of float, [N]
        BLIP-VQA, CLIP and 2D-spatial scores; an entry not used by its kind may be anything (NaN).

    Returns
    -------
    np.ndarray, float64 [N]
        The mean of the used sub-scores, NaN ones left out; NaN when all used ones are NaN.
    """
    table = {"attribute": np.asarray(attribute, np.float64), "action": np.asarray(action, np.float64),
             "spatial": np.asarray(spatial, np.float64)}
    used = {"spatial": ("attribute", "spatial"), "action": ("attribute", "action"),
            "spatial_action": ("attribute", "spatial", "action")}
    out = np.full(len(kinds), np.nan)
    for i, kind in enumerate(kinds):
        values = np.array([table[name][i] for name in used[kind]])
        if not np.isnan(values).all():
            out[i] = np.nanmean(values)
    return out
