"""One way for every settings dataclass to refuse a bad value: the error names the class, the field and the value."""

from __future__ import annotations


def require(settings, name: str, ok: bool, expected: str) -> None:
    """Raise ``ValueError("Class.name must be <expected>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(settings).__name__}.{name} must be {expected}, got {getattr(settings, name)!r}")
