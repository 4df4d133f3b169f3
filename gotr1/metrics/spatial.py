"""The 2D-spatial geometry rule of T2I-CompBench (``UniDet_eval/2D_spatial_eval.py``), as pure functions.

Two detected objects, the relation word of the prompt and the detector's confidences give one score:

    score = 0.25 conf1 + 0.25 conf2 + 0.5 position(relation, box1, box2),   0 where below 0.5

with ``position`` in [0, 1] from the boxes' centre offsets and IoU (:func:`relative_position`). An object
not detected contributes nothing, so a missing object always scores 0. Boxes are ``(x1, y1, x2, y2)``
pixels of the frame the official detector saw: the image resized to a shorter side of 479, longer side at
most 480 (:func:`official_frame`), where the 150-pixel distance threshold applies.

The official detector, UniDet, has a closed vocabulary: an object counts only when the prompt's noun *equals*
one of its label strings (after girl, boy, man, woman -> person), else it is never detected
(:func:`unidet_label`). The label list ships as ``assets/t2i_compbench/unidet_labels.json`` (see the
folder's ``LICENSE.md`` for its source).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

RELATIONS = (
    "on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of",
    "on top of",
)
"""The official script's relation words, searched in this order; the first contained in the prompt wins."""
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150.0
MIN_SCORE = 0.5
"""Scores below this are set to 0."""

_SHORT_SIDE, _MAX_SIDE = 479, 480  # transforms.Resize(size=479, max_size=480) before UniDet

PERSON_WORDS = ("girl", "boy", "man", "woman")
"""Nouns the official script renames to UniDet's ``person`` before matching."""


@lru_cache(maxsize=1)
def unidet_labels() -> frozenset[str]:
    """UniDet's 722 label strings (677 distinct), exactly as the official script compares them.

    Some hold commas ("table, desk") or a trailing space ("tissue "): such a label never equals a one-word
    noun, so its objects are never found officially.
    """
    text = files("gotr1").joinpath("assets/t2i_compbench/unidet_labels.json").read_text(encoding="utf-8")
    return frozenset(json.loads(text))


def unidet_label(noun: str | None) -> str | None:
    """The UniDet label a prompt's noun is matched to, or None when UniDet can never detect it.

    "girl" -> "person", "cat" -> "cat", "wallet" -> None (not a UniDet label), None -> None. Matching is
    exact and case-sensitive, as the official ``obj1 in obj`` test on the detected labels' strings.
    """
    if noun is None:
        return None
    label = "person" if noun in PERSON_WORDS else noun
    return label if label in unidet_labels() else None


def spatial_relation(prompt: str) -> str | None:
    """The first of :data:`RELATIONS` that occurs in ``prompt`` (a plain substring test, as the official one)."""
    return next((word for word in RELATIONS if word in prompt), None)


def official_frame(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` of an image after torchvision's ``Resize(size=479, max_size=480)``."""
    short, long = min(width, height), max(width, height)
    new_short, new_long = _SHORT_SIDE, int(_SHORT_SIDE * long / short)
    if new_long > _MAX_SIDE:
        new_short, new_long = int(_MAX_SIDE * new_short / new_long), _MAX_SIDE
    return (new_short, new_long) if width <= height else (new_long, new_short)


def box_iou(box1, box2) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0 for two empty boxes."""
    inter_w = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    inter_h = max(0.0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    inter = inter_w * inter_h
    union = (box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - inter
    return inter / union if union > 0 else 0.0


def relative_position(relation: str | None, box1, box2, iou_threshold: float = IOU_THRESHOLD,
                      distance_threshold: float = DISTANCE_THRESHOLD) -> float:
    """How well ``box1`` stands in ``relation`` to ``box2``, in [0, 1] (``determine_position`` of the script).

    With ``dx, dy`` the offset of box2's centre from box1's (image axes, y down):

    - "next to", "on side of", "near": 1 when ``|dx|`` or ``|dy|`` is under the distance threshold,
      else ``threshold / max(|dx|, |dy|)``;
    - "on the left of" (dx > 0), "on the right of" (dx < 0): when the offset is mostly horizontal
      (``|dx| > |dy|``), 1 if IoU < threshold else ``threshold / IoU``; otherwise 0;
    - "on the top of" (dy > 0), "on the bottom of" (dy < 0): the same with the axes swapped;
    - anything else, "on top of" included (the script has no branch for it), or no relation: 0.
    """
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    if relation in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    directions = {
        "on the left of": (dx > 0, abs(dx) > abs(dy)),
        "on the right of": (dx < 0, abs(dx) > abs(dy)),
        "on the top of": (dy > 0, abs(dy) > abs(dx)),
        "on the bottom of": (dy < 0, abs(dy) > abs(dx)),
    }
    if relation not in directions:
        return 0.0
    right_side, dominant_axis = directions[relation]
    if not (right_side and dominant_axis):
        return 0.0
    iou = box_iou(box1, box2)
    return 1.0 if iou < iou_threshold else iou_threshold / iou


def spatial_rule(relation: str | None, box1, conf1: float | None, box2, conf2: float | None) -> float:
    """The official 2D-spatial score of one image: confidences and position, 0 below :data:`MIN_SCORE`.

    Parameters
    ----------
    relation : str or None
        One of :data:`RELATIONS` (see :func:`spatial_relation`), or None.
    box1, box2 : sequence of 4 floats or None
        ``(x1, y1, x2, y2)`` of the first and second object in the official frame; None if not detected.
    conf1, conf2 : float or None
        The detector's confidence of each box (ignored where the box is None).

    Returns
    -------
    float
        ``0.25 conf1 + 0.25 conf2 + 0.5 relative_position`` with both objects, ``0.25 conf`` with one,
        0 with none; then 0 if below 0.5 (so one missing object always gives 0).
    """
    if box1 is not None and box2 is not None:
        score = 0.25 * conf1 + 0.25 * conf2 + relative_position(relation, box1, box2) / 2
    elif box1 is not None:
        score = 0.25 * conf1
    elif box2 is not None:
        score = 0.25 * conf2
    else:
        score = 0.0
    return score if score >= MIN_SCORE else 0.0
