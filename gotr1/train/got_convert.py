"""Rewrite the chains of the published GoT datasets into GoT-R1's chain format.

GoT's model text (Laion-Aesthetics-High-Resolution-GoT, JourneyDB-GoT, FLUX-GoT) writes boxes with
Qwen2.5-VL's tags and a colour after each box, naming the object with ``<|object_ref_start|>`` tags or
only by the words before the box::

    <|object_ref_start|>a cat<|object_ref_end|><|box_start|>(100,200),(350,450)<|box_end|> (red)

GoT-R1 trains on ``<|obj_start|>a cat<|obj_end|> <|box_start|>(100,200),(350,450)<|box_end|>`` with
0-1000 coordinates. OmniEdit-GoT stores the text with placeholders and the coordinates apart (its
``coord`` column), so those are substituted first. Every rewrite is counted by kind, so a conversion can
report how much of the data it changed; a chain that still fails strict parsing raises
:class:`ChainRejected`.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from gotr1.chain import BOX_END, BOX_START, COORD_MAX, OBJ_END, OBJ_START, ChainFormatError, parse_chain

# Repair kinds, each counted once per occurrence.
REPAIRS = (
    "placeholder_substituted",  # a coord placeholder replaced by its coordinates
    "qwen_tags",  # an <|object_ref_*|> name retagged as <|obj_start|>...<|obj_end|>
    "ref_untagged",  # an <|object_ref_*|> name with no box after it, left as plain text
    "name_inferred",  # a box without a tagged name: the words before it became the name
    "colour_dropped",  # the " (colour)" after a box removed
    "tags_normalized",  # a GoT-R1 tag written with inner spaces ("<| obj_start |>") respelled
    "box_reformatted",  # box text rewritten as (x1,y1),(x2,y2) (spacing, brackets)
    "rounded",  # a fractional coordinate rounded to an integer
    "clamped",  # a coordinate clamped to [0, 1000]
    "corners_swapped",  # corners reordered to top-left, bottom-right
)

# Names taken from the text before an untagged box stop at clause punctuation and keep at most this many words.
MAX_INFERRED_NAME_WORDS = 6

_SPACED_TAG = re.compile(r"<\|(?:\s+(obj_start|obj_end|box_start|box_end)\s*|(obj_start|obj_end|box_start|box_end)\s+)\|>")
_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.S)
_BOX = re.compile(r"<\|box_start\|>(.*?)<\|box_end\|>", re.S)
_BOX_OPEN = re.compile(r"<\|box_start\|>\s*$")
_NAMED = re.compile(r"<\|obj_end\|>\s*$")
_COLOUR = re.compile(r"[ \t]*\(\s*[A-Za-z][A-Za-z_-]*\s*\)")
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_BOX_BODY = re.compile(r"\s*[(\[]?\s*{n}\s*,\s*{n}\s*[)\]]?\s*,?\s*[(\[]?\s*{n}\s*,\s*{n}\s*[)\]]?\s*".format(n=_NUMBER))
_CLAUSE_END = re.compile(r"[,.;:!?\n]|\|>")
_WORD = re.compile(r"\S+")
_JOINING_WORDS = frozenset({"and", "or", "with"})
_ARTICLES = frozenset({"a", "an", "the"})


class ChainRejected(ValueError):
    """A chain that cannot be converted; ``reason`` is a short category, the message adds the detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _coord_values(value) -> list[float]:
    """Four numbers from a coord entry: ``[x1, y1, x2, y2]``, ``[[x1, y1], [x2, y2]]`` or ``"(x1,y1),(x2,y2)"``."""
    if isinstance(value, str):
        numbers = re.findall(r"-?\d+(?:\.\d+)?", value)
    elif isinstance(value, (list, tuple)):
        flat = [v for item in value for v in (item if isinstance(item, (list, tuple)) else [item])]
        numbers = flat
    else:
        numbers = []
    try:
        out = [float(v) for v in numbers]
    except (TypeError, ValueError):
        out = []
    if len(out) != 4 or any(isinstance(v, bool) for v in numbers):
        raise ChainRejected("bad coord", f"expected 4 coordinates, got {value!r}")
    return out


def _box_text(values: list[float], repairs: Counter) -> str:
    """``(x1,y1),(x2,y2)`` of four coordinates: rounded, clamped to [0, 1000] and corners ordered, each counted;
    a box of zero width or height after that is rejected (it marks no region to draw or ground)."""
    ints = [int(round(v)) for v in values]
    repairs["rounded"] += sum(v != i for v, i in zip(values, ints))
    clamped = [min(max(v, 0), COORD_MAX) for v in ints]
    repairs["clamped"] += sum(v != c for v, c in zip(ints, clamped))
    x1, y1, x2, y2 = clamped
    if x1 > x2 or y1 > y2:
        repairs["corners_swapped"] += 1
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    if x1 == x2 or y1 == y2:
        raise ChainRejected("degenerate box", f"({x1},{y1}),({x2},{y2}) has zero {'width' if x1 == x2 else 'height'}")
    return f"({x1},{y1}),({x2},{y2})"


def substitute_coords(text: str, coords, repairs: Counter) -> str:
    """OmniEdit-GoT's form: each placeholder (a key of ``coords``, a dict or its JSON) replaced by its box.

    A placeholder already inside box tags becomes the box body; one standing alone becomes a whole box.
    """
    if isinstance(coords, str):
        try:
            coords = json.loads(coords)
        except json.JSONDecodeError as err:
            raise ChainRejected("bad coord", f"not JSON ({err})") from None
    if not isinstance(coords, dict):
        raise ChainRejected("bad coord", f"expected a mapping of placeholders, got {type(coords).__name__}")
    if not coords:
        return text
    bodies = {str(key): value for key, value in coords.items()}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(bodies, key=len, reverse=True)))
    pieces, cursor = [], 0
    for match in pattern.finditer(text):
        before = text[cursor : match.start()]
        body = _box_text(_coord_values(bodies[match.group(0)]), repairs)
        inside = _BOX_OPEN.search(text[: match.start()]) is not None
        pieces.append(before)
        pieces.append(body if inside else f"{BOX_START}{body}{BOX_END}")
        repairs["placeholder_substituted"] += 1
        cursor = match.end()
    pieces.append(text[cursor:])
    return "".join(pieces)


def _retag_refs(text: str, repairs: Counter) -> str:
    """``<|object_ref_start|>NAME<|object_ref_end|>`` before a box -> GoT-R1 object tags; elsewhere plain NAME."""

    def retag(match: re.Match) -> str:
        name = " ".join(match.group(1).split())
        if re.match(r"\s*<\|box_start\|>", text[match.end() :]):
            repairs["qwen_tags"] += 1
            return f"{OBJ_START}{name}{OBJ_END} "
        repairs["ref_untagged"] += 1
        return name

    return _REF.sub(retag, text)


def _name_untagged(prefix: str, repairs: Counter) -> str:
    """``prefix`` (the text before a box) with its last words tagged as the box's object name.

    The name starts after the last clause punctuation or tag, at the last article (``a``, ``an``, ``the``) or
    after the last joining word (``and``, ``or``, ``with``), whichever is later, and keeps at most
    :data:`MAX_INFERRED_NAME_WORDS` words. A heuristic: GoT's captions name the object just before its box.
    """
    stripped = prefix.rstrip()
    boundary = max((m.end() for m in _CLAUSE_END.finditer(stripped)), default=0)
    words = list(_WORD.finditer(stripped, boundary))
    starts = [i + (w.group(0).lower() in _JOINING_WORDS) for i, w in enumerate(words)
              if w.group(0).lower() in _JOINING_WORDS or w.group(0).lower() in _ARTICLES]
    words = words[starts[-1] if starts else 0 :][-MAX_INFERRED_NAME_WORDS:]
    if not words:
        raise ChainRejected("box without a name", f"nothing names the box after {stripped[-40:]!r}")
    repairs["name_inferred"] += 1
    name = " ".join(w.group(0) for w in words)
    return f"{stripped[: words[0].start()]}{OBJ_START}{name}{OBJ_END} "


def _rewrite_boxes(text: str, repairs: Counter) -> str:
    """Each box rewritten in GoT-R1's form, named, its coordinates repaired and its colour suffix dropped."""
    out, cursor = "", 0
    for match in _BOX.finditer(text):
        out += text[cursor : match.start()]
        body = match.group(1)
        numbers = _BOX_BODY.fullmatch(body)
        if numbers is None:
            raise ChainRejected("malformed box", repr(body[:60]))
        if body != "({},{}),({},{})".format(*numbers.groups()):
            repairs["box_reformatted"] += 1
        box = _box_text([float(v) for v in numbers.groups()], repairs)
        if _NAMED.search(out):
            out = out.rstrip() + " "
        else:
            out = _name_untagged(out, repairs)
        out += f"{BOX_START}{box}{BOX_END}"
        cursor = match.end()
        colour = _COLOUR.match(text, cursor)
        if colour is not None:
            repairs["colour_dropped"] += 1
            cursor = colour.end()
    return out + text[cursor:]


def convert_chain(text: str, coords=None) -> tuple[str, Counter]:
    """A GoT or GoT-R1 chain in GoT-R1's format, and the repairs it took.

    Parameters
    ----------
    text : str
        The chain as published: GoT model text (Qwen2.5-VL tags, colours), OmniEdit-GoT text with
        placeholders, or a GoT-R1 chain (passed through, coordinates still repaired).
    coords : dict or str, optional
        OmniEdit-GoT's ``coord`` value (a mapping, or its JSON) from placeholder to coordinates.

    Returns
    -------
    (str, Counter)
        The chain, which ``parse_chain(chain, strict=True)`` accepts with at least one object, and the
        count of each repair made (kinds in :data:`REPAIRS`).

    Raises
    ------
    ChainRejected
        With ``reason`` ``"no chain"``, ``"bad coord"``, ``"malformed box"``, ``"degenerate box"`` (zero width
        or height after rounding and clamping), ``"box without a name"``, ``"unparsable chain"`` or
        ``"chain has no objects"``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ChainRejected("no chain", f"got {text!r}"[:80])
    repairs: Counter = Counter()
    text, spaced = _SPACED_TAG.subn(lambda m: f"<|{m.group(1) or m.group(2)}|>", text)
    repairs["tags_normalized"] += spaced
    if coords is not None:
        text = substitute_coords(text, coords, repairs)
    text = _retag_refs(text, repairs)
    text = _rewrite_boxes(text, repairs).strip()
    try:
        chain = parse_chain(text, strict=True)
    except ChainFormatError as err:
        raise ChainRejected("unparsable chain", str(err)) from None
    if not chain.objects:
        raise ChainRejected("chain has no objects")
    return text, +repairs  # unary plus drops the kinds that never happened
