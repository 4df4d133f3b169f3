"""gotr1: reasoning-driven text-to-image training (GoT-R1) for Janus-Pro.

The package is organised by stage, each importing only the ones before it: the chain and layout formats
(``gotr1.chain``, ``gotr1.layout``), ``gotr1.policy``, ``gotr1.rollout``, ``gotr1.rewards`` and ``gotr1.metrics``, ``gotr1.train``
and ``gotr1.grpo``, ``gotr1.eval``, ``gotr1.demo``, ``gotr1.cli``; ``gotr1.kernels`` (the repository's
``kernels/`` folder) sits below them all. See ``docs/architecture.md``.
"""

from importlib.util import find_spec as _find_spec

__version__ = "0.1.0"

# The Triton kernels live in the repository's kernels/ folder: they join the package only when it is installed
# (or laid out by benchmarks/gpu_check.sh's source tree). Importing the bare checkout would fail later, on a
# missing name. The compiled canvas (gotr1._canvas) is imported where it is used: gotr1.layout says how to build it.
if _find_spec("gotr1.kernels") is None:
    raise ImportError(
        "gotr1 is imported from a source checkout that is not installed: gotr1.kernels (the repository's "
        "kernels/ folder) and the compiled gotr1._canvas join the package only at install time. From the "
        "repository root run `python -m pip install scikit-build-core pybind11 && python -m pip install "
        "--no-build-isolation -e .` (the development install), or `python -m pip install .`."
    )
