"""YAML files and command-line options mapped one to one onto the config dataclasses.

Every field of a trainer config (:class:`~gotr1.train.config.SFTConfig`, :class:`~gotr1.grpo.config.GRPOConfig`)
and of the command's own settings (:mod:`gotr1.cli.jobs`) is a YAML key and a ``--field-name`` option whose
help is the field's docstring; one YAML file holds the keys of both, each going to its owner. Unknown keys and values that do not convert
are errors that name the field. YAML values are checked against the field's type: only unambiguous text
converts (``lr: 1e-5``, which PyYAML reads as a string; ``use_lora: "false"``); ``save_every: 1.5``,
``model: 123`` and non-finite numbers (``lr: .inf``) are refused. A YAML syntax error is named by
``file:line:column``. A boolean option given bare (``--overwrite``) means true.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from pathlib import Path

import yaml


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass (and of its dataclass bases)."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _parse_value(text: str, kind):
    """Convert command-line ``text`` to the field type ``kind`` (Optional, bool, int, float, str, tuple)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        return _parse_value(text, next(a for a in args if a not in (type(None), dict)))
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_parse_value(part.strip(), item) for part in text.split(",") if part.strip())
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    return kind(text)


def _coerce(value, kind):
    """A YAML value as the field type ``kind``: exact types pass, text converts as on the command line,
    anything else (a float for an int, a number for a string, a non-finite number) is refused. A field typed
    ``str | dict`` takes a mapping, or text (a mapping written as YAML text stays text for its owner to read)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, dict) and dict in args:
            return dict(value)
        return _coerce(value, next(a for a in args if a not in (type(None), dict)))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        item = args[0] if args else str
        return tuple(_coerce(v, item) for v in value)
    if isinstance(value, str) and kind is not str:
        value = _parse_value(value.strip(), kind)  # "1e-5" (PyYAML reads it as text), "false", "8"
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"expected {getattr(kind, '__name__', kind)}, got {value!r} ({type(value).__name__})")


def _types(cls) -> dict:
    return typing.get_type_hints(cls)


def add_config_options(parser: argparse.ArgumentParser, cls, title: str | None = None) -> None:
    """Add ``--field-name VALUE`` for every field of ``cls`` (default: the YAML's or the dataclass's)."""
    docs, defaults = field_docs(cls), {f.name: f.default for f in dataclasses.fields(cls)}
    group = parser.add_argument_group(title or f"{cls.__name__} fields (override the --config file)")
    for name, kind in _types(cls).items():
        if name not in defaults:
            continue
        bare = {"nargs": "?", "const": "true"} if kind is bool else {}  # `--overwrite` alone: true
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", metavar="VALUE", default=None,
                           help=f"{docs.get(name, '')} (default: {defaults[name]!r})", **bare)


def _read_yaml(path: str | Path | None, owners: str) -> dict:
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: YAML syntax error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: YAML syntax error: {err}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of {owners} fields, got {type(loaded).__name__}")
    return loaded


def _build(cls, values: dict, overrides: dict, path):
    """``cls`` from YAML ``values`` and ``{field: text}`` overrides, both checked against the field types."""
    kinds = _types(cls)
    for name in list(values):
        try:
            values[name] = _coerce(values[name], kinds[name])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {name}: {err}") from None
    for name, text in overrides.items():
        try:
            values[name] = _coerce(_parse_value(text, kinds[name]), kinds[name])
        except (ValueError, TypeError) as err:
            raise ValueError(f"--{name.replace('_', '-')}: {err}") from None
    return cls(**values)


def load_sections(path: str | Path | None, overrides: dict | None, *classes) -> tuple:
    """One instance of each of ``classes`` from a YAML file holding their fields side by side, and
    ``{field: text}`` command-line overrides; each key goes to every class that has the field.

    Raises
    ------
    ValueError
        Naming the unknown key or the field whose value does not convert or validate.
    """
    owners = " / ".join(cls.__name__ for cls in classes)
    values = _read_yaml(path, owners)
    fields = [{f.name for f in dataclasses.fields(cls)} for cls in classes]
    unknown = sorted(set(values) - set().union(*fields))
    if unknown:
        raise ValueError(f"{path}: unknown {owners} field(s) {unknown}; known fields: {sorted(set().union(*fields))}")
    overrides = overrides or {}
    return tuple(_build(cls, {k: v for k, v in values.items() if k in names},
                        {k: v for k, v in overrides.items() if k in names}, path)
                 for cls, names in zip(classes, fields))


def load_config(cls, path: str | Path | None = None, overrides: dict | None = None):
    """Build ``cls`` from a YAML file and ``{field: text}`` command-line overrides (see :func:`load_sections`)."""
    return load_sections(path, overrides, cls)[0]


def config_overrides(args: argparse.Namespace) -> dict:
    """The ``--field`` options given on the command line, as ``{field: text}``."""
    return {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg_") and value is not None}


def _without_secrets(value):
    """``value`` with every ``api_key`` left out, however deep: a run folder is shared as freely as a checkpoint,
    so a key stays in the environment (``$GOTR1_REWARD_API_KEY``) or the user's own config file."""
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if k != "api_key"}
    return value


def dump_config(*configs) -> str:
    """YAML of one or more configs side by side (tuples as lists, API keys left out), loadable again by
    :func:`load_sections`."""
    data = {}
    for config in configs:
        data.update({k: list(v) if isinstance(v, tuple) else _without_secrets(v)
                     for k, v in dataclasses.asdict(config).items()})
    return yaml.safe_dump(data, sort_keys=False)
