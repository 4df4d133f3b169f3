"""What a lent GPU machine has, before ``gpu_check.sh`` spends device time on it.

    python benchmarks/gpu_preflight.py OUT_DIR [--wheels DIR]

Checks the Python version, torch / triton / transformers and CUDA, the build tools the editable install needs
(cmake, a C++ compiler, scikit-build-core, pybind11), and the packages the steps import: pytest, pytest-benchmark
(the repository's ``addopts`` name its options, so without it pytest stops before any test), hypothesis and peft.
A missing package is installed from a wheel in ``--wheels`` when one is there (nothing can be downloaded on the
machine; ``gpu_check.sh --fetch-wheels DIR`` fills the folder where a registry is reachable). Prints one line per
check and writes ``OUT_DIR/preflight.env``, which ``gpu_check.sh`` sources: ``EDITABLE_OK`` (the build tools are
there), ``HAS_BENCHMARK``, ``HAS_PEFT``, ``HAS_HYPOTHESIS``, ``HAS_CUDA`` (0 or 1 each). Exits 0 unless the
Python or torch is unusable.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = {  # import name -> (distribution, what needs it)
    "pytest": ("pytest", "every test step"),
    "pytest_benchmark": ("pytest-benchmark", "pytest itself (addopts: --benchmark-disable) and bench_suite"),
    "hypothesis": ("hypothesis", "the canvas and chain property tests (not run by gpu_check)"),
    "peft": ("peft", "LoRA: the GRPO step benchmarks"),
}
BUILD = {"scikit_build_core": "scikit-build-core", "pybind11": "pybind11"}


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _install_from(wheels: Path | None, distribution: str) -> bool:
    """Install ``distribution`` from a wheel in ``wheels`` (no index, no dependencies); True when it worked."""
    if wheels is None:
        return False
    found = sorted(wheels.glob(f"{distribution.replace('-', '_')}-*.whl"))
    if not found:
        return False
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(found[-1])],
                          capture_output=True, text=True)
    return done.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--wheels", type=Path, default=None, help="folder of wheels to install missing packages from")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wheels = args.wheels if args.wheels is not None and args.wheels.is_dir() else None
    flags = {}

    version = sys.version_info
    print(f"python {version.major}.{version.minor}.{version.micro} ({sys.executable})")
    if version < (3, 10):
        print("preflight: gotr1 needs Python >= 3.10")
        return 1
    try:
        import torch
    except ImportError as err:
        print(f"preflight: torch does not import: {err}")
        return 1
    flags["HAS_CUDA"] = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if flags["HAS_CUDA"] else "no CUDA device"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {name}")
    for module in ("triton", "transformers"):
        spec = _have(module)
        print(f"{module} {__import__(module).__version__}" if spec else f"{module}: MISSING")

    tools = {tool: shutil.which(tool) for tool in ("cmake", "c++", "ninja", "make")}
    python_build = {dist: _have(module) for module, dist in BUILD.items()}
    flags["EDITABLE_OK"] = bool(tools["cmake"] and tools["c++"] and (tools["ninja"] or tools["make"])
                                and all(python_build.values()))
    print("build tools: " + ", ".join(f"{k} {'ok' if v else 'MISSING'}" for k, v in {**tools, **python_build}.items()))
    print("editable install: " + ("possible" if flags["EDITABLE_OK"] else
                                  "not possible here; gpu_check.sh puts the source tree on PYTHONPATH instead"))

    for module, (distribution, needed_by) in PACKAGES.items():
        present = _have(module)
        how = "ok"
        if not present and _install_from(wheels, distribution):
            importlib.invalidate_caches()
            present, how = _have(module), f"installed from {wheels}"
        print(f"{distribution}: {how if present else 'MISSING'} (needed by {needed_by})")
        flags[f"HAS_{module.split('_')[-1].upper()}"] = present

    (args.out / "preflight.env").write_text("".join(f"{k}={int(bool(v))}\n" for k, v in sorted(flags.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
