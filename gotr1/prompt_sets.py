"""Prompt lists by name: the T2I-CompBench validation lists shipped with gotr1, or a text file.

GRPO trains on them (``GRPOJob.prompts``) and ``gotr1 eval`` scores them, one table column per category.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")


def read_prompts(spec: str) -> dict[str, list[str]]:
    """Prompts by category: a text file (category = its stem) or T2I-CompBench categories joined by commas
    (the validation lists shipped with gotr1)."""
    path = Path(spec)
    if path.is_file():
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"prompts: {path} holds no prompts")
        return {path.stem: prompts}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPBENCH_CATEGORIES]
    if not names or unknown:
        raise ValueError(f"prompts: {spec!r} is neither a file nor T2I-CompBench categories "
                         f"(known: {', '.join(COMPBENCH_CATEGORIES)})")
    folder = resources.files("gotr1").joinpath("assets/t2i_compbench")
    return {n: [l.strip() for l in folder.joinpath(f"{n}_val.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
            for n in names}
