"""GenEval's correctness rules on detections, with no model: which detections count, and what makes an image right.

Each rule follows the official ``evaluation/evaluate_images.py`` and ``evaluation/summary_scores.py`` of
https://github.com/djghosh13/geneval (re-implemented, not copied):

* Keep a class's detections above the confidence threshold (strictly: ``score > 0.3``, ``> 0.9`` for the
  ``counting`` tag), best first, at most 16 per class, then suppress overlaps above ``max_overlap`` (1.0 in the
  official run, i.e. no suppression; IoU with the ``+1`` pixel convention).
* ``include`` clauses are AND-ed: each wants at least ``count`` objects of its class and looks only at the
  ``count`` most confident; ``exclude`` clauses are OR-ed: ``count`` or more kept objects of the class make the
  image wrong. Counting prompts pair ``include`` N with ``exclude`` N + 1, hence an exact count.
* A colour is judged on each of those objects by a :class:`ColorClassifier` (CLIP zero-shot in the official
  run) on the object's crop, its background outside the mask painted ``#999``.
* A position holds when every object of the clause stands in the relation to every object of the target clause
  (see :func:`relative_position`); a failed target clause fails the position.
* The summary is the mean over the six tags of each tag's accuracy over its images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""The six GenEval tasks, in the order of the official metadata file (and its summary table)."""

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
"""The colours the classifier chooses among, in the official order (ties go to the first)."""

COLOR_TEMPLATES = ("a photo of a {color} {object}", "a photo of a {color}-colored {object}",
                   "a photo of a {color} object")
"""The three zero-shot prompts per colour; their normalised text embeddings are averaged, then renormalised."""

RELATIONS = ("left of", "right of", "above", "below")

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
MAX_OVERLAP = 1.0
POSITION_THRESHOLD = 0.1
CROP_BACKGROUND = (153, 153, 153)
"""``#999``: what the colour crop shows outside the object's mask."""


@dataclass
class ClassDetections:
    """A detector's instances of one class in one image, any order.

    Attributes
    ----------
    boxes : np.ndarray
        float ``[k, 4]``, ``(x1, y1, x2, y2)`` in pixels.
    scores : np.ndarray
        float ``[k]``, confidences in [0, 1].
    masks : np.ndarray or None
        bool ``[k, H, W]``, the instance masks at the image's size; ``None`` crops colours from boxes alone.
    """

    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        assert len(self.boxes) == len(self.scores), f"boxes: {len(self.boxes)} rows for {len(self.scores)} scores"
        assert self.masks is None or len(self.masks) == len(self.scores), "masks: one per score"


class DetectedObject(NamedTuple):
    """One kept object: its box ``[4]`` (pixels), its score, its bool mask ``[H, W]`` or None."""

    box: np.ndarray
    score: float
    mask: np.ndarray | None


class ColorClassifier(Protocol):
    """``(image, objects, class name) -> one colour of COLORS per object``."""

    def __call__(self, image: np.ndarray, objects: list[DetectedObject], classname: str) -> list[str]: ...


# ----------------------------------------------------------------------------------------- which objects count


def confidence_threshold(tag: str) -> float:
    """The score a detection must exceed: 0.9 for counting prompts (false positives break counts), else 0.3."""
    return COUNTING_THRESHOLD if tag == "counting" else THRESHOLD


def box_iou(box_a, box_b) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes counting both end pixels (the official ``+1`` convention)."""
    def area(box):
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def select_objects(detections: dict[str, ClassDetections], threshold: float, *, max_objects: int = MAX_OBJECTS,
                   max_overlap: float = MAX_OVERLAP) -> dict[str, list[DetectedObject]]:
    """The objects GenEval counts: per class, ``score > threshold``, best first, the first ``max_objects``,
    then greedy suppression of any later box whose IoU with a kept one reaches ``max_overlap`` (none at 1.0).

    Classes left with no object are absent from the result. Ties in score keep the later detection first, as the
    official reversed ascending sort does.
    """
    kept = {}
    for classname, found in detections.items():
        order = np.argsort(found.scores, kind="stable")[::-1]
        order = [int(i) for i in order if found.scores[i] > threshold][:max_objects]
        objects = []
        while order:
            best = order.pop(0)
            objects.append(DetectedObject(found.boxes[best], float(found.scores[best]),
                                          None if found.masks is None else found.masks[best]))
            if max_overlap < 1:
                order = [i for i in order if box_iou(found.boxes[best], found.boxes[i]) < max_overlap]
        if objects:
            kept[classname] = objects
    return kept


# ----------------------------------------------------------------------------------------------- the checks


def relative_position(box_a, box_b, threshold: float = POSITION_THRESHOLD) -> tuple[str, ...]:
    """Where box A lies relative to box B, in RELATIONS order (empty: too close to tell).

    The centre offset ``d = c_A - c_B`` shrinks by ``threshold * (size_A + size_B)`` per axis (not below 0);
    each shrunk component over ``|d|`` beyond 0.5 names a relation (image y grows downwards, so negative is
    "above"). Hence a purely horizontal offset must exceed twice ``threshold * (w_A + w_B)``.
    """
    corners = np.array([box_a[:4], box_b[:4]], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = corners.mean(axis=1)
    size_a, size_b = np.abs(corners[:, 1] - corners[:, 0])
    offset = center_a - center_b
    shrunk = np.maximum(np.abs(offset) - threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return ()
    dx, dy = shrunk / np.linalg.norm(offset)
    holds = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return tuple(r for r in RELATIONS if holds[r])


def object_crop(image: np.ndarray, obj: DetectedObject, background=CROP_BACKGROUND) -> Image.Image:
    """The region the colour classifier sees: the image with everything outside the mask painted ``background``,
    cropped to the box (PIL's crop: coordinates rounded, at least one pixel kept here)."""
    if obj.mask is not None:
        if obj.mask.shape != image.shape[:2]:
            raise ValueError(f"mask: shape {obj.mask.shape} differs from the image's {image.shape[:2]}")
        image = np.where(obj.mask[..., None], image, np.asarray(background, dtype=np.uint8))
    x1, y1, x2, y2 = (round(float(v)) for v in obj.box[:4])
    return Image.fromarray(image).crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))


def _check_include(image, objects, clause, groups, classify_colors) -> tuple[list | None, list[str]]:
    """One include clause: the objects it matched (None if it failed) and the reasons it failed."""
    classname, count = clause["class"], clause["count"]
    found = objects.get(classname, [])[:count]  # colour and position look at the most confident only
    if len(found) < count:
        return None, [f"expected {classname}>={count}, found {len(found)}"]
    if "color" in clause:
        colors = list(classify_colors(image, found, classname))
        wanted = clause["color"]
        if colors.count(wanted) < count:
            seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
            return None, [f"expected {wanted} {classname}>={count}, found {colors.count(wanted)} {wanted}; and {seen}"]
    if "position" in clause:
        relation, target = clause["position"]
        if groups[target] is None:
            return None, [f"no target for {classname} to be {relation}"]
        for obj in found:
            for other in groups[target]:
                holds = relative_position(obj.box, other.box)
                if relation not in holds:
                    return None, [f"expected {classname} {relation} target, found {' and '.join(holds)} target"]
    return found, []


def evaluate(image: np.ndarray, objects: dict[str, list[DetectedObject]], metadata: dict,
             classify_colors: ColorClassifier) -> tuple[bool, str]:
    """Whether one image satisfies its prompt's metadata, and why not (reasons joined by newlines, "" if right).

    Parameters
    ----------
    image : np.ndarray
        uint8 ``[H, W, 3]``, the image the objects were detected in (for colour crops).
    objects : dict
        Class name -> kept objects, best first (:func:`select_objects`).
    metadata : dict
        One row of GenEval's metadata: ``include`` (AND-ed), optional ``exclude`` (OR-ed).
    classify_colors : ColorClassifier
        Called only for clauses that ask for a colour.
    """
    reasons, groups = [], []
    for clause in metadata.get("include", []):
        found, failed = _check_include(image, objects, clause, groups, classify_colors)
        groups.append(found)
        reasons += failed
    for clause in metadata.get("exclude", []):
        present = len(objects.get(clause["class"], []))
        if present >= clause["count"]:
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {present}")
    return not reasons, "\n".join(reasons)


def judge(image: np.ndarray, detections: dict[str, ClassDetections], metadata: dict,
          classify_colors: ColorClassifier) -> tuple[bool, str, dict[str, list[DetectedObject]]]:
    """:func:`select_objects` at the tag's threshold, then :func:`evaluate`: (correct, reason, kept objects)."""
    objects = select_objects(detections, confidence_threshold(metadata["tag"]))
    correct, reason = evaluate(image, objects, metadata, classify_colors)
    return correct, reason, objects


# -------------------------------------------------------------------------------------------------- summary


def summarize(tags: list[str], correct: list[float]) -> dict[str, float]:
    """Per-tag accuracy and ``overall``, as the official ``summary_scores.py`` reports them.

    Each tag's accuracy is the mean over its images; ``overall`` is the mean of the six tags' accuracies (not the
    mean over images, so every task weighs the same). NaN entries of ``correct`` (images that could not be
    scored) are left out of their tag's mean. A tag with no scored image is NaN, and so is ``overall`` then:
    a run that lacks a task has no GenEval score (the official script would average the tasks present).

    Parameters
    ----------
    tags : list of str
        One tag of TAGS per image.
    correct : list of float
        1.0 right, 0.0 wrong, NaN not scored; one per image.
    """
    if len(tags) != len(correct):
        raise ValueError(f"tags and correct: {len(tags)} tags for {len(correct)} results")
    unknown = sorted(set(tags) - set(TAGS))
    if unknown:
        raise ValueError(f"tags: {unknown} are not GenEval tags {list(TAGS)}")
    tags = np.asarray(tags, dtype=object)
    values = np.asarray(correct, dtype=np.float64)
    result = {}
    for tag in TAGS:
        picked = values[(tags == tag) & ~np.isnan(values)]
        result[tag] = float(picked.mean()) if picked.size else float("nan")
    result["overall"] = float(np.mean([result[tag] for tag in TAGS]))
    return result
