"""Tolerant reading of judge replies: JSON anywhere in the text, scores, and Qwen2.5-VL grounding boxes.

A judge is a language model: its JSON comes in code fences, behind a sentence of preamble, with single
quotes, numbers as strings or a trailing comma. The readers below accept all of that and return None
when nothing usable is found, so that the reward scores the reply 0 (never a good score) and counts it.

Score rule (``normalize_score``), for a rubric whose top is ``scale`` (10 for GoT-R1):

- an explicit fraction (``"7/10"``, ``"7 out of 10"``, ``"70%"``) is divided by its denominator;
- a bare value ``v`` in ``[0, scale]`` is read on the rubric: ``v / scale``;
- ``scale < v <= 100`` is read as a 0-100 answer: ``v / 100`` (judges sometimes switch scales; a value
  just above the rubric's top is much rarer than a percentage-style answer);
- negative values give 0; values above 100, infinite or not a number are no score at all (None): a reply
  such as ``{"score": 1e308}`` is malformed and must not become a full mark.
"""

from __future__ import annotations

import ast
import json
import math
import re

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
# A number read whole, exponent included ("1e309" must not read as 1), and never the head of a longer one.
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\.?\d)"
_FRACTION = re.compile(rf"^\s*({_NUM})\s*(?:/|out of)\s*({_NUM})\s*$", re.I)
_PERCENT = re.compile(rf"^\s*({_NUM})\s*%\s*$")
_PLAIN = re.compile(rf"^\s*({_NUM})\s*$")
_SCORE_IN_TEXT = re.compile(
    rf"\b(?:score|rating)\b[^0-9]{{0,12}}?({_NUM})(?:\s*(?:/|out of)\s*({_NUM}))?", re.I
)
_BOX_IN_TEXT = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
SCORE_KEYS = ("score", "rating", "final_score", "overall_score", "overall")
BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d")


# ---------------------------------------------------------------------------------------------
# JSON anywhere
# ---------------------------------------------------------------------------------------------


def _loads(text: str):
    """json.loads, then a repaired variant, then Python literal syntax (single quotes); None if all fail."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", text)
    try:
        return json.loads(repaired)
    except ValueError:
        pass
    try:
        return ast.literal_eval(repaired)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _balanced_spans(text: str):
    """Yield each substring that starts at ``{`` or ``[`` and ends at its matching bracket, outermost first."""
    closing = {"{": "}", "[": "]"}
    for start, ch in enumerate(text):
        if ch not in closing:
            continue
        stack, quote, escaped = [], None, False
        for pos in range(start, len(text)):
            c = text[pos]
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c in closing:
                stack.append(closing[c])
            elif c in "}]":
                if not stack or c != stack.pop():
                    break
                if not stack:
                    yield text[start : pos + 1]
                    break


def extract_json(text: str | None):
    """The first JSON value (object, array or scalar) found in a reply, or None.

    Tries, in order: the whole reply, the body of each code fence, then every balanced ``{...}`` or
    ``[...]`` span of the reply; each with trailing commas removed and single quotes accepted.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        value = _loads(candidate)
        if value is not None:
            return value
    for span in _balanced_spans(text):
        value = _loads(span)
        if value is not None:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def normalize_score(value: float, scale: float = 10.0, denominator: float | None = None) -> float | None:
    """A judge's number mapped to [0, 1] by the module's score rule; None if not finite or above 100."""
    if not math.isfinite(value):
        return None
    if denominator is not None:
        if not math.isfinite(denominator) or denominator <= 0:
            return None
        return min(max(value / denominator, 0.0), 1.0)
    if value <= scale:
        return max(value / scale, 0.0)
    if value <= 100.0:
        return value / 100.0
    return None


def _score_from_value(value, scale: float) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return normalize_score(float(value), scale)
    if isinstance(value, str):
        if m := _FRACTION.match(value):
            return normalize_score(float(m.group(1)), scale, float(m.group(2)))
        if m := _PERCENT.match(value):
            return normalize_score(float(m.group(1)), scale, 100.0)
        if m := _PLAIN.match(value):
            return normalize_score(float(m.group(1)), scale)
        return None
    if isinstance(value, dict):
        lowered = {str(k).strip().lower(): v for k, v in value.items()}
        for key in SCORE_KEYS:
            if key in lowered:
                return _score_from_value(lowered[key], scale)
        return None
    if isinstance(value, list) and len(value) == 1:
        return _score_from_value(value[0], scale)
    return None


def parse_score(text: str | None, scale: float = 10.0) -> float | None:
    """The score of a rubric reply, in [0, 1]; None when the reply holds no readable score.

    Parameters
    ----------
    text : str or None
        The judge's reply (None: the request failed).
    scale : float
        The top of the rubric (10 for GoT-R1's 0-10 scores).

    Examples
    --------
    ``'{"score": 8}'``, ``'```json\\n{"score": "8"}\\n```'``, ``"{'score': 8}"``, ``"Score: 8/10"`` and ``"8"``
    all give 0.8; ``'{"score": 80}'`` gives 0.8 too (0-100 answer detected); ``"great image"`` gives None.
    """
    if not isinstance(text, str):
        return None
    found = _score_from_value(extract_json(text), scale)
    if found is not None:
        return found
    if m := _SCORE_IN_TEXT.search(text):
        denominator = float(m.group(2)) if m.group(2) else None
        return normalize_score(float(m.group(1)), scale, denominator)
    return _score_from_value(text.strip(), scale)


# ---------------------------------------------------------------------------------------------
# Grounding boxes
# ---------------------------------------------------------------------------------------------


def _as_box(value) -> tuple[float, float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = []
    for v in value:
        if isinstance(v, bool):
            return None
        try:
            number = float(v)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    x1, y1, x2, y2 = numbers
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _boxes_from_value(value) -> list | None:
    if isinstance(value, dict):
        lowered = {str(k).strip().lower(): v for k, v in value.items()}
        for key in BOX_KEYS:
            if key in lowered:
                box = _as_box(lowered[key])
                return None if box is None else [box]
        return None
    if isinstance(value, (list, tuple)):
        box = _as_box(value)
        if box is not None:
            return [box]
        boxes = []
        for item in value:
            found = _boxes_from_value(item)
            if found is None:
                return None
            boxes.extend(found)
        return boxes
    return None


def parse_bboxes(text: str | None) -> list[tuple[float, float, float, float]] | None:
    """The boxes of a Qwen2.5-VL grounding reply, as given (pixels of the judge's resized input).

    Accepts ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}, ...]`` (also keys ``bbox``/``box``, a single
    object, a bare ``[x1, y1, x2, y2]`` or a list of them, numbers as strings), fenced or inside prose;
    as a last resort, every ``[n, n, n, n]`` in the text. Corners come back ordered.

    Returns
    -------
    list of (x1, y1, x2, y2) floats, or None
        ``[]`` when the judge answered with an empty list (it found nothing); None when the reply is
        unreadable.
    """
    if not isinstance(text, str):
        return None
    value = extract_json(text)
    if value is not None:
        boxes = _boxes_from_value(value)
        if boxes is not None:
            return boxes
    found = [_as_box(m.groups()) for m in _BOX_IN_TEXT.finditer(text)]
    return found or None
