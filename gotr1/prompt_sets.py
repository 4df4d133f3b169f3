"""Prompt lists by name: the T2I-CompBench lists shipped with gotr1, text files, JSONL files, and weighted mixtures.

GRPO trains on them (``GRPOJob.prompts``, through :func:`read_prompt_mixture`) and ``gotr1 eval`` scores them
(:func:`read_prompts`), one table column per category. A spec is sources joined by commas; a source is a file
(``.jsonl``/``.json``: one JSON object a line with a string ``prompt``, other fields ignored, as T2I-R1's prompt
file; anything else: one prompt a line), a T2I-CompBench validation category (``color``: ``color_val.txt``) or a
T2I-CompBench training list (``color_train``). In a mixture each source may carry a weight, ``color_train:1,
spatial_train:2,prompts.jsonl:1``.

The validation lists exist in two revisions of the T2I-CompBench repository (:data:`COMPBENCH_REVISIONS`);
the default is the one the GoT-R1 paper evaluated.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np

COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
COMPBENCH_TRAIN_LISTS = tuple(f"{c}_train" for c in (*COMPBENCH_CATEGORIES, "3d_spatial", "numeracy"))
JSON_LINES_SUFFIXES = (".jsonl", ".json")
COMPBENCH_REVISIONS = {
    "2023-07": "the validation lists as first released (T2I-CompBench commit 7710d05, 2023-07-09), unchanged "
               "until 2025-09: the lists GoT-R1 (May 2025) evaluated",
    "2025-09": "T2I-CompBench commit 3310c2f (2025-09-03): color_val.txt with 5 of 300 prompts changed "
               "(duplicates replaced)",
}
"""Revisions of the validation lists, by the month they were published. Files a revision changes live under
``assets/t2i_compbench/revisions/{revision}/``; the rest are shared."""
DEFAULT_COMPBENCH_REVISION = "2023-07"


# --- sources ---------------------------------------------------------------------------------------------------


def _read_text_file(path) -> list[str]:
    """The non-empty lines of a file or a packaged resource, stripped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_json_lines(path: Path) -> list[str]:
    """The ``prompt`` field of each line; a line that is not an object with a non-empty string prompt is an error."""
    prompts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"prompts: {path}:{number}: not JSON ({err})") from None
            prompt = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompts: {path}:{number}: needs a non-empty string field 'prompt', got {prompt!r}")
            prompts.append(prompt.strip())
    return prompts


def _read_file(path: Path) -> list[str]:
    prompts = _read_json_lines(path) if path.suffix in JSON_LINES_SUFFIXES else _read_text_file(path)
    if not prompts:
        raise ValueError(f"prompts: {path} holds no prompts")
    return prompts


def check_revision(revision: str) -> str:
    """``revision`` if it is one of :data:`COMPBENCH_REVISIONS`, else a ValueError naming the choices."""
    if revision not in COMPBENCH_REVISIONS:
        raise ValueError(f"prompt revision: {revision!r} is not one of {', '.join(COMPBENCH_REVISIONS)}")
    return revision


def _read_source(name: str, revision: str = DEFAULT_COMPBENCH_REVISION) -> list[str]:
    """The prompts of one source: a file, a validation category (of ``revision``) or a training list."""
    path = Path(name)
    if path.is_file():
        return _read_file(path)
    folder = resources.files("gotr1").joinpath("assets/t2i_compbench")
    if name in COMPBENCH_CATEGORIES:
        revised = folder.joinpath("revisions", check_revision(revision), f"{name}_val.txt")
        return _read_text_file(revised if revised.is_file() else folder.joinpath(f"{name}_val.txt"))
    if name in COMPBENCH_TRAIN_LISTS:
        return _read_text_file(folder.joinpath(f"{name}.txt"))
    if path.suffix or len(path.parts) > 1:
        raise ValueError(f"prompts: no file {name!r}")
    raise ValueError(f"prompts: {name!r} is neither a file nor a T2I-CompBench list (validation categories: "
                     f"{', '.join(COMPBENCH_CATEGORIES)}; training lists: {', '.join(COMPBENCH_TRAIN_LISTS)})")


def _split(spec: str) -> list[str]:
    """A spec's parts; a spec that is one existing file is that file, commas in its name included."""
    if Path(spec).is_file():
        return [spec]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"prompts: {spec!r} names no source")
    return parts


def read_prompts(spec: str, revision: str = DEFAULT_COMPBENCH_REVISION) -> dict[str, list[str]]:
    """Prompts by category, every prompt of every source once.

    Parameters
    ----------
    spec : str
        Sources joined by commas (module docstring), without weights. A file's category is its stem, a
        shipped list's its name (``color`` for the validation list, ``color_train`` for the training list).
    revision : str
        Which revision of the validation lists (:data:`COMPBENCH_REVISIONS`).

    Returns
    -------
    dict[str, list[str]]
        Category -> its prompts, in file order.
    """
    return {(Path(part).stem if Path(part).is_file() else part): _read_source(part, revision)
            for part in _split(spec)}


# --- mixtures --------------------------------------------------------------------------------------------------


def _parse_part(part: str) -> tuple[str, float | None]:
    """``source[:weight]`` -> (source, weight or None). A part that is an existing file has no weight."""
    if Path(part).is_file() or ":" not in part:
        return part, None
    source, _, text = part.rpartition(":")
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"prompts: weight {text!r} of {source!r} must be a positive number")
    return source.strip(), weight


def _apportion(size: int, weights: list[float]) -> list[int]:
    """Integer counts summing to ``size`` in proportion to ``weights`` (largest remainder)."""
    shares = np.asarray(weights, dtype=np.float64) / sum(weights) * size
    counts = np.floor(shares).astype(np.int64)
    for i in np.argsort(-(shares - counts), kind="stable")[: size - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def read_prompt_mixture(spec: str, seed: int = 0, size: int | None = None) -> list[str]:
    """The training prompt list of a spec, each source's share of it equal to its weight over the sum.

    The GRPO trainer draws from this list in seeded per-epoch permutations, so over each epoch it draws the
    sources in the stated proportions. A source with fewer prompts than its share is repeated (each prompt
    whole times, the remainder drawn without replacement, so no prompt appears more than once above
    another); a larger one is subsampled without replacement.

    Parameters
    ----------
    spec : str
        Sources joined by commas, each optionally ``:WEIGHT`` (a positive number; a source without one has
        weight 1 in a weighted spec). A spec without any weight gives every prompt of every source once,
        in order (as :func:`read_prompts`), and ignores ``seed`` and ``size``.
    seed : int
        Seeds the subsampling and the final shuffle.
    size : int, optional
        Length of the list. Default: the number of distinct prompts over all sources.

    Returns
    -------
    list[str]
        ``size`` prompts, shuffled.
    """
    parts = [_parse_part(part) for part in _split(spec)]
    if all(weight is None for _, weight in parts):
        return [prompt for prompts in read_prompts(spec).values() for prompt in prompts]
    sources = [_read_source(source) for source, _ in parts]
    if size is None:
        size = len({prompt for prompts in sources for prompt in prompts})
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"prompts: size must be a positive integer, got {size!r}")
    rng = np.random.default_rng(seed)
    mixture: list[str] = []
    for prompts, count in zip(sources, _apportion(size, [1.0 if w is None else w for _, w in parts])):
        whole, rest = divmod(count, len(prompts))
        mixture += prompts * whole + [prompts[i] for i in np.sort(rng.choice(len(prompts), rest, replace=False))]
    return [mixture[i] for i in rng.permutation(len(mixture))]
