"""Offline rule rewards, same signature as the judge rewards, for tests, the demo and runs without a judge GPU.

- :class:`LayoutRuleReward` (reasoning stage): the chain's boxes against what the prompt asks for, the
  objects it names and the relations between them (left of, right of, above, below, on top of, next to).
- :class:`ColorRuleReward` (image stage): the colour the prompt (or the chain) requests for an object,
  measured inside that object's chain box in the decoded image; usable with tiny random models.

Both return float32 ``[N]`` in [0, 1] and a ``details`` dict; NaN marks a prompt the rule cannot check
(TRL's None-becomes-NaN convention), and a chain without objects scores 0. The prompt reader is a
heuristic for short compositional prompts such as T2I-CompBench's, not a parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gotr1.chain import Chain, ChainObject, box_iou, parse_chain
from gotr1.images import as_rgb_array
from gotr1.metrics.spatial import IOU_THRESHOLD

# Relation phrases, longest first so "on the top of" wins over "on"; each maps to one geometric test.
RELATIONS = (
    (r"(?:on|to) the left (?:side )?of|left of", "left"),
    (r"(?:on|to) the right (?:side )?of|right of", "right"),
    (r"on (?:the )?top of|atop", "on_top"),
    (r"on (?:the )?bottom of|underneath|beneath|below|under", "below"),
    (r"above|over", "above"),
    (r"next to|beside|near|on (?:the )?side of", "next_to"),
)
_RELATION_KINDS = tuple(kind for _, kind in RELATIONS)
_RELATION = re.compile(r"\b(" + "|".join(f"(?:{p})" for p, _ in RELATIONS) + r")\b", re.I)
# Conjunctions and the prepositions that start another object ("tulips in a vase", "a cat on a mat").
_SPLIT = re.compile(
    r"\b(?:and|with|while|that|which|in|inside|into|on|at|by|from|behind|against|along|across|among)\b|[,.;:!?]", re.I
)
_WORD = re.compile(r"[a-z]+")
# Number words give a phrase its count; everything else here is dropped before the head noun is read.
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_FILLERS = frozenset(
    "a an the some this that these those is are was were be being sits sitting "
    "sit stands standing stand placed located lies lying hangs hanging positioned".split()
) | frozenset(NUMBERS)
# Reference RGB of each colour word; a pixel belongs to the nearest one.
PALETTE = {
    "red": (220, 30, 30), "green": (40, 160, 40), "blue": (30, 60, 220), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (130, 40, 170), "pink": (245, 150, 190), "brown": (130, 80, 30),
    "black": (10, 10, 10), "white": (245, 245, 245), "gray": (128, 128, 128),
}
_COLOR_ALIASES = {"grey": "gray"}


# ---------------------------------------------------------------------------------------------
# Reading prompts
# ---------------------------------------------------------------------------------------------


def _stem(word: str) -> str:
    """A crude singular so "apples" matches "apple"; applied to both sides of every comparison."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


@dataclass(frozen=True)
class Phrase:
    """An object the prompt names: its head noun (stemmed), the words before it (colours, ...), and how many
    the prompt asks for (a number word before it; None when it gives none: "a cat", "cats")."""

    head: str
    modifiers: tuple[str, ...]
    count: int | None = None

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(_COLOR_ALIASES.get(w, w) for w in self.modifiers if _COLOR_ALIASES.get(w, w) in PALETTE)


@dataclass(frozen=True)
class Relation:
    """``subject`` <kind> ``object`` read from the prompt, e.g. ("cat", "left", "dog")."""

    subject: Phrase
    kind: str
    object: Phrase


def _phrase(segment: str) -> Phrase | None:
    all_words = _WORD.findall(segment.lower())
    words = [w for w in all_words if w not in _FILLERS]
    if not words:
        return None
    count = next((NUMBERS[w] for w in all_words if w in NUMBERS), None)
    return Phrase(_stem(words[-1]), tuple(words[:-1]), count)


def _phrases(text: str) -> list[Phrase]:
    return [p for p in (_phrase(s) for s in _SPLIT.split(text)) if p is not None]


def read_prompt(prompt: str) -> tuple[list[Phrase], list[Relation]]:
    """The object phrases of a prompt and the relations between them.

    The prompt is cut at relation phrases; each relation links the last object before it to the first
    object after it. Objects are split further at "and", "with", commas; an object's head noun is its last
    word once articles and verbs such as "is" or "sitting" are dropped.
    """
    pieces = _RELATION.split(prompt)
    groups = [_phrases(text) for text in pieces[0::2]]
    kinds = [_relation_kind(text) for text in pieces[1::2]]
    relations = [
        Relation(before[-1], kind, after[0])
        for before, kind, after in zip(groups, kinds, groups[1:])
        if before and after
    ]
    return [p for group in groups for p in group], relations


def _relation_kind(text: str) -> str:
    for pattern, kind in RELATIONS:
        if re.fullmatch(pattern, text, re.I):
            return kind
    raise AssertionError(f"relation phrase {text!r} matched the union but no single pattern")


def _stem_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def _matches(phrase: Phrase, obj: ChainObject) -> bool:
    """The chain object names the phrase's head noun and every colour the prompt gives it.

    Checking the colours too keeps a chain from passing by renaming a "black square" a "gray square".
    """
    own = _phrase(obj.name)
    return phrase.head in _stem_words(obj.name) and set(phrase.colors) <= set(own.colors if own else ())


# ---------------------------------------------------------------------------------------------
# Geometry of relations (boxes on 0-1000, origin top-left)
# ---------------------------------------------------------------------------------------------


def relation_holds(kind: str, a, b) -> bool:
    """Whether box ``a`` stands in relation ``kind`` to box ``b`` (each (x1, y1, x2, y2)).

    Every relation needs two distinct places: IoU below T2I-CompBench's threshold for distinct objects
    (:data:`gotr1.metrics.spatial.IOU_THRESHOLD`, 0.1), so a chain cannot satisfy "A above B" by stacking a
    page-sized box over B. Then left/right/above/below compare box centres; ``on_top`` is above with
    horizontally overlapping boxes; ``next_to`` needs vertically overlapping boxes and a horizontal gap of at
    most half the wider box.
    """
    if kind not in _RELATION_KINDS:
        raise ValueError(f"unknown relation kind {kind!r}; expected one of {list(_RELATION_KINDS)}")
    if float(box_iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))) >= IOU_THRESHOLD:
        return False
    ax, ay = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    x_overlap = min(a[2], b[2]) - max(a[0], b[0])
    y_overlap = min(a[3], b[3]) - max(a[1], b[1])
    if kind == "left":
        return ax < bx
    if kind == "right":
        return ax > bx
    if kind == "above":
        return ay < by
    if kind == "below":
        return ay > by
    if kind == "on_top":
        return ay < by and x_overlap > 0
    return y_overlap > 0 and -x_overlap <= 0.5 * max(a[2] - a[0], b[2] - b[0])  # next_to


# ---------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------


def _chains(prompts, chains) -> list[Chain]:
    if len(chains) != len(prompts):
        raise ValueError(f"chains has {len(chains)} entries for {len(prompts)} prompts")
    return [c if isinstance(c, Chain) else parse_chain(c) for c in chains]


class LayoutRuleReward:
    """Reasoning-stage rule reward: the fraction of the prompt's checks the chain's layout passes.

    Checks: each object phrase of the prompt has a chain object whose name contains its head noun and the
    phrase's colours (exactly as many such objects as a number word asks: "three red triangles"), each
    relation holds for some pair of matching chain boxes (:func:`relation_holds`), and, when the prompt asks
    for two or more objects not all tied by relations, the chain objects it names occupy distinct places (pairwise IoU below
    T2I-CompBench's 0.1: GenEval's detector would see stacked objects as one). NaN when the
    prompt names nothing; 0 for a chain without objects. Call as ``reward(prompts, chains, images=None,
    judge=None) -> (float32 [N], details)``; ``details["checks"]`` lists (passed, total) per sample.

    Parameters
    ----------
    strict : bool
        Score 1 only when every check passes and 0 otherwise (GenEval-style correctness): a layout that
        names both objects but breaks the relation then earns nothing rather than two thirds.
    """

    __name__ = "layout_rule_reward"  # instances are logged by name, like reward functions

    def __init__(self, strict: bool = False):
        self.strict = strict

    def __call__(self, prompts, chains, images=None, judge=None):
        scores, checks = [], []
        for prompt, chain in zip(prompts, _chains(prompts, chains)):
            phrases, relations = read_prompt(prompt)
            # Related objects are already distinct (relation_holds); the check is for the rest.
            several = sum(p.count or 1 for p in phrases) >= 2 and (
                not relations or any((p.count or 1) >= 2 for p in phrases))
            total = len(phrases) + len(relations) + several
            if total == 0:
                scores.append(np.nan)
                checks.append((0, 0))
                continue
            passed = sum(_named(p, chain) for p in phrases) + sum(self._holds(r, chain) for r in relations)
            passed += several and _distinct([o for o in chain.objects if any(_matches(p, o) for p in phrases)])
            scores.append(float(passed == total) if self.strict else passed / total)
            checks.append((passed, total))
        return np.asarray(scores, dtype=np.float32), {"checks": checks}

    @staticmethod
    def _holds(relation: Relation, chain: Chain) -> bool:
        subjects = [i for i, o in enumerate(chain.objects) if _matches(relation.subject, o)]
        objects = [j for j, o in enumerate(chain.objects) if _matches(relation.object, o)]
        boxes = [o.box.as_tuple() for o in chain.objects]
        return any(relation_holds(relation.kind, boxes[i], boxes[j]) for i in subjects for j in objects if i != j)


def _distinct(objects: list[ChainObject]) -> bool:
    """Two or more objects, no two of whose boxes overlap by IoU :data:`IOU_THRESHOLD` or more."""
    if len(objects) < 2:
        return False
    boxes = np.array([o.box.as_tuple() for o in objects], dtype=np.float64)
    pairs = np.triu_indices(len(boxes), k=1)
    return bool((box_iou(boxes[:, None], boxes[None, :])[pairs] < IOU_THRESHOLD).all())


def _named(phrase: Phrase, chain: Chain) -> bool:
    """The chain names the phrase's object, as many times as the prompt's number word asks (GenEval's
    counting: exactly that many), at least once when it gives none."""
    matches = sum(_matches(phrase, o) for o in chain.objects)
    return matches == phrase.count if phrase.count is not None else matches >= 1


def _requested_colors(phrases: list[Phrase], obj: ChainObject) -> tuple[str, ...]:
    """The colours the prompt asks for the chain object: those of the prompt phrase it names.

    Always the prompt's colours, never the chain's own words, so a chain that renames its objects after the
    background colour cannot score. When several phrases share the object's noun ("an orange circle next to
    a purple circle"), the phrase whose colours the object's name carries is the one it answers.
    """
    candidates = [p for p in phrases if p.colors and p.head in _stem_words(obj.name)]
    return next((p.colors for p in candidates if _matches(p, obj)), candidates[0].colors if candidates else ())


class ColorRuleReward:
    """Image-stage rule reward: requested colours found inside each chain box of the decoded image.

    An object's requested colour is the last colour word of the prompt phrase whose head noun it carries;
    the chain's own colour words are ignored, so renaming objects cannot game the reward. Every pixel is assigned the nearest colour of :data:`PALETTE`; an object scores
    ``min(1, share of its box's pixels with the requested colour / target_share)`` and a sample the mean over
    its coloured objects. NaN when no object has a requested colour or no images are given; 0 for a chain
    without objects.

    Parameters
    ----------
    target_share : float
        Share of a box that must show the colour for full marks (objects rarely fill their box).
    """

    __name__ = "color_rule_reward"  # instances are logged by name, like reward functions

    def __init__(self, target_share: float = 0.5):
        if not 0 < target_share <= 1:
            raise ValueError(f"target_share must be in (0, 1], got {target_share}")
        self.target_share = target_share
        self._palette = np.array(list(PALETTE.values()), dtype=np.float32)

    def __call__(self, prompts, chains, images, judge=None):
        chains = _chains(prompts, chains)
        if images is None:
            return np.full(len(chains), np.nan, dtype=np.float32), {"object_share": [[] for _ in chains]}
        if len(images) != len(chains):
            raise ValueError(f"images has {len(images)} entries for {len(chains)} prompts")
        scores, shares = [], []
        for prompt, chain, image in zip(prompts, chains, images):
            per_object = self._object_shares(prompt, chain, as_rgb_array(image))
            shares.append(per_object)
            if not chain.objects:
                scores.append(0.0)
            elif not per_object:
                scores.append(np.nan)
            else:
                scores.append(float(np.mean([min(1.0, s / self.target_share) for s in per_object])))
        return np.asarray(scores, dtype=np.float32), {"object_share": shares}

    def _object_shares(self, prompt: str, chain: Chain, image: np.ndarray) -> list[float]:
        phrases, _ = read_prompt(prompt)
        height, width = image.shape[:2]
        names = list(PALETTE)
        shares = []
        for obj in chain.objects:
            colors = _requested_colors(phrases, obj)
            if not colors:
                continue
            x1, y1, x2, y2 = obj.box.to_pixels(width, height)
            crop = image[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
            if len(crop) == 0:
                shares.append(0.0)
                continue
            nearest = ((crop[:, None, :] - self._palette[None]) ** 2).sum(-1).argmin(1)
            shares.append(float(np.mean(nearest == names.index(colors[-1]))))
        return shares
