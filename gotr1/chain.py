"""The Generation Chain-of-Thought (GoT) format: parse, validate, format and compare boxes.

A chain is a caption whose objects carry boxes on a 0-1000 scale, origin top-left::

    A <|obj_start|>red apple<|obj_end|> <|box_start|>(120,400),(480,900)<|box_end|> on a table

and it ends where ``<begin_of_image>`` starts the image tokens (GoT-R1, arXiv 2505.17022).
Rewards parse what a policy wrote, so the lenient parser never raises: every malformed span is
recorded in ``Chain.errors`` with its character offset and skipped. Data loading parses strictly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

OBJ_START = "<|obj_start|>"
OBJ_END = "<|obj_end|>"
BOX_START = "<|box_start|>"
BOX_END = "<|box_end|>"
GOT_TOKENS = (OBJ_START, OBJ_END, BOX_START, BOX_END)
BEGIN_OF_IMAGE = "<begin_of_image>"
COORD_MAX = 1000

# Tags tolerate inner spaces ("<| obj_start |>"), which sampled chains sometimes contain.
_TAG = re.compile(r"<\|\s*(obj_start|obj_end|box_start|box_end)\s*\|>")
_BOX_BODY = re.compile(r"\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*,?\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*")
_NUMBER = re.compile(r"-?\d+(?:\.\d*)?")
_BOX_SPAN = re.compile(r"<\|\s*box_start\s*\|>.*?<\|\s*box_end\s*\|>", re.S)
_DANGLING_BOX = re.compile(r"<\|\s*box_start\s*\|>[\d\s(),.\-]*")


class ChainFormatError(ValueError):
    """A chain span that strict parsing rejects; ``offset`` and ``span`` locate it in the text."""

    def __init__(self, message: str, offset: int, span: str):
        super().__init__(f"{message} at offset {offset}: {span!r}")
        self.offset = offset
        self.span = span


@dataclass(frozen=True)
class Box:
    """An axis-aligned box on the chain's 0-1000 scale; (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: int
    y1: int
    x2: int
    y2: int

    def __post_init__(self):
        for name in ("x1", "y1", "x2", "y2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Box.{name} must be an int, got {value!r}")
            if not 0 <= value <= COORD_MAX:
                raise ValueError(f"Box.{name}={value} is outside [0, {COORD_MAX}]")
        if self.x1 > self.x2 or self.y1 > self.y2:
            raise ValueError(f"Box corners are not ordered: ({self.x1},{self.y1}),({self.x2},{self.y2})")

    @property
    def area(self) -> int:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Box edges in pixels of a ``width`` x ``height`` image, rounded half up, in [0, width] x [0, height]."""
        _check_size(width, height)
        return (_scale(self.x1, width), _scale(self.y1, height), _scale(self.x2, width), _scale(self.y2, height))

    @classmethod
    def from_pixels(cls, x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> "Box":
        """The box on the 0-1000 scale of pixel edges in a ``width`` x ``height`` image (clamped, corners ordered)."""
        _check_size(width, height)
        coords = np.array([x1 / width, y1 / height, x2 / width, y2 / height], dtype=np.float64)
        if not np.all(np.isfinite(coords)):
            raise ValueError(f"Box.from_pixels got non-finite coordinates {(x1, y1, x2, y2)}")
        c = np.clip(np.floor(coords * COORD_MAX + 0.5), 0, COORD_MAX).astype(int)
        return cls(int(min(c[0], c[2])), int(min(c[1], c[3])), int(max(c[0], c[2])), int(max(c[1], c[3])))


@dataclass(frozen=True)
class ChainObject:
    """One tagged object of a chain: its name as written and its box."""

    name: str
    box: Box


@dataclass(frozen=True)
class ChainIssue:
    """A problem found while parsing: where it starts, the offending text and what was wrong or repaired."""

    offset: int
    span: str
    message: str


@dataclass
class Chain:
    """A parsed chain: the chain text (up to ``<begin_of_image>``), its objects, and what parsing had to skip or repair."""

    text: str
    objects: list[ChainObject] = field(default_factory=list)
    errors: list[ChainIssue] = field(default_factory=list)

    @property
    def boxes(self) -> np.ndarray:
        """int64 ``[K, 4]`` boxes of the objects, on the 0-1000 scale."""
        return np.array([o.box.as_tuple() for o in self.objects], dtype=np.int64).reshape(-1, 4)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")


def _scale(value: int, size: int) -> int:
    return (value * size * 2 + COORD_MAX) // (2 * COORD_MAX)


def chain_text(text: str) -> str:
    """The chain part of a generated text: everything before the first ``<begin_of_image>``."""
    cut = text.find(BEGIN_OF_IMAGE)
    return text if cut < 0 else text[:cut]


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class _Parser:
    """A small state machine over the tag tokens of one chain; records issues instead of raising."""

    def __init__(self, text: str):
        self.text = text
        self.objects: list[ChainObject] = []
        self.errors: list[ChainIssue] = []

    def issue(self, offset: int, end: int, message: str) -> None:
        self.errors.append(ChainIssue(offset, self.text[offset:end], message))

    def run(self) -> None:
        name_start = None  # offset of an open <|obj_start|>
        pending = None  # (name, offset of its <|obj_start|>, end of its <|obj_end|>) awaiting a box
        box_start = None  # (offset of the span an open <|box_start|> belongs to, end of that tag)
        for tag in _TAG.finditer(self.text):
            kind, start, end = tag.group(1), tag.start(), tag.end()
            if box_start is not None:
                if kind == "box_end":
                    self.close_box(pending, box_start, start, end)
                    pending, box_start = None, None
                    continue
                self.issue(box_start[0], start, "unclosed <|box_start|>")
                box_start, pending = None, None
            if name_start is not None:
                if kind == "obj_end":
                    pending = self.close_name(name_start, start, end)
                    name_start = None
                    continue
                self.issue(name_start[0], start, "unclosed <|obj_start|>")
                name_start = None
            if pending is not None and (kind != "box_start" or self.text[pending[2] : start].strip()):
                self.no_box(pending)
                pending = None
            if kind == "obj_start":
                name_start = (start, end)
            elif kind == "box_start":
                box_start = (start if pending is None else pending[1], end)
                if pending is None:
                    self.issue(start, end, "box without an object")
            else:
                self.issue(start, end, f"stray <|{kind}|>")
        tail = len(self.text)
        if box_start is not None:
            self.issue(box_start[0], tail, "unclosed <|box_start|>")
        elif name_start is not None:
            self.issue(name_start[0], tail, "unclosed <|obj_start|>")
        elif pending is not None:
            self.no_box(pending)

    def no_box(self, pending) -> None:
        if pending[0] is not None:  # an object already rejected for its name is not reported twice
            self.issue(pending[1], pending[2], "object has no box")

    def close_name(self, name_start, start: int, end: int):
        """The pending object ``(name, start offset, end offset)``; name None when it is rejected."""
        name = " ".join(self.text[name_start[1] : start].split())
        if not name:
            self.issue(name_start[0], end, "empty object name")
        return (name or None, name_start[0], end)

    def close_box(self, pending, box_start, start: int, end: int) -> None:
        if pending is None or pending[0] is None:
            return  # already recorded: "box without an object" or "empty object name"
        body = self.text[box_start[1] : start]
        offset, span_end = pending[1], end
        match = _BOX_BODY.fullmatch(body)
        if match is None:
            numbers = _NUMBER.findall(body)
            if any("." in n for n in numbers):
                message = "non-integer coordinate in box"
            elif len(numbers) != 4:
                message = f"box needs 4 coordinates, found {len(numbers)}"
            else:
                message = "malformed box"
            self.issue(offset, span_end, message)
            return
        x1, y1, x2, y2 = (int(v) for v in match.groups())
        clamped = [min(max(v, 0), COORD_MAX) for v in (x1, y1, x2, y2)]
        if clamped != [x1, y1, x2, y2]:
            self.issue(offset, span_end, f"coordinates clamped to [0, {COORD_MAX}]")
        x1, y1, x2, y2 = clamped
        if x1 > x2 or y1 > y2:
            self.issue(offset, span_end, "swapped box corners ordered")
            x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        self.objects.append(ChainObject(pending[0], Box(x1, y1, x2, y2)))


def parse_chain(text: str, strict: bool = False) -> Chain:
    """Parse a GoT chain.

    Parameters
    ----------
    text : str
        What the model wrote; anything from ``<begin_of_image>`` on is ignored.
    strict : bool
        Raise :class:`ChainFormatError` on the first problem instead of recording it.

    Returns
    -------
    Chain
        ``objects`` in order of appearance; ``errors`` lists each skipped span (missing or non-integer
        numbers, wrong arity, unclosed or stray tags) and each repair (clamped coordinates, swapped
        corners), with its character offset. Untagged mentions are plain text and are not objects.
    """
    if not isinstance(text, str):
        if strict:
            raise TypeError(f"parse_chain expects text: str, got {type(text).__name__}")
        return Chain("", [], [ChainIssue(0, "", f"not a string: {type(text).__name__}")])
    body = chain_text(text)
    parser = _Parser(body)
    parser.run()
    errors = sorted(parser.errors, key=lambda e: e.offset)
    if strict and errors:
        first = errors[0]
        raise ChainFormatError(first.message, first.offset, first.span)
    return Chain(body, parser.objects, errors)


# ---------------------------------------------------------------------------------------------
# Formatting and plain captions
# ---------------------------------------------------------------------------------------------


def _tagged(obj: ChainObject) -> str:
    b = obj.box
    return f"{OBJ_START}{obj.name}{OBJ_END} {BOX_START}({b.x1},{b.y1}),({b.x2},{b.y2}){BOX_END}"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip() or " ".join(name.split()) != name:
        raise ValueError(f"object name must be non-empty single-spaced text without outer spaces, got {name!r}")
    if _TAG.search(name) or BEGIN_OF_IMAGE in name or "<|" in name or "|>" in name:
        raise ValueError(f"object name must not contain GoT tags, got {name!r}")


def format_chain(objects: list[ChainObject], text: str | None = None) -> str:
    """Write objects in the GoT format.

    With ``text`` (a plain caption), each object's name is tagged at its first occurrence after the
    previous object, and objects whose names do not occur are appended at the end. Without it, the
    tagged objects are joined with ``", "``. ``parse_chain(format_chain(x)).objects == x``.
    """
    for obj in objects:
        _check_name(obj.name)
    if text is None:
        return ", ".join(_tagged(o) for o in objects)
    if _TAG.search(text) or BEGIN_OF_IMAGE in text:
        raise ValueError(f"format_chain text must be a plain caption without tags, got {text!r}")
    pieces, cursor, missing = [], 0, []
    for obj in objects:
        found = text.find(obj.name, cursor)
        if found < 0:
            missing.append(obj)
            continue
        pieces.append(text[cursor:found])
        pieces.append(_tagged(obj))
        cursor = found + len(obj.name)
    pieces.append(text[cursor:])
    out = "".join(pieces)
    if missing:
        out = f"{out.rstrip()} " + ", ".join(_tagged(o) for o in missing)
    return out


def strip_boxes(text: str) -> str:
    """The chain as a plain caption: box spans and tags removed, whitespace normalised (input of R_sem)."""
    body = _BOX_SPAN.sub(" ", chain_text(text))
    body = _DANGLING_BOX.sub(" ", body)
    body = _TAG.sub(" ", body)
    body = " ".join(body.split())
    return re.sub(r"\s+([,.;:!?])", r"\1", body)


# ---------------------------------------------------------------------------------------------
# Box overlap
# ---------------------------------------------------------------------------------------------


def box_iou(a, b) -> np.ndarray:
    """Element-wise IoU of boxes ``[..., 4]`` (x1, y1, x2, y2), broadcast like numpy; 0 where the union is empty.

    Pass ``a[:, None]`` and ``b[None, :]`` for the pairwise ``[K, M]`` matrix. Any consistent coordinate
    system works (0-1000 or pixels); float64 result.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
        raise ValueError(f"box_iou expects boxes of shape [..., 4], got a={a.shape}, b={b.shape}")
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou(a: Box, b: Box) -> float:
    """IoU of two boxes; 0 when both are empty."""
    return float(box_iou(a.as_tuple(), b.as_tuple()))
