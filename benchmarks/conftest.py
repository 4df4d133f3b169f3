"""pytest-benchmark suite of gotr1: ``pytest benchmarks/ --benchmark-only`` (see ``report.py`` for the tables).

The scripts of this folder (``bench_*.py``) build the workloads; the ``test_bench_*.py`` files import them,
so this folder goes on ``sys.path``. The repository's pytest settings add ``--benchmark-disable`` for the
default run of ``tests/``; here ``--benchmark-only`` turns benchmarking back on (pytest-benchmark itself
refuses the pair), unless ``--benchmark-disable`` was typed on the command line. Each case's median is printed
as soon as it is measured: pytest-benchmark writes its JSON only when the session ends, and a run cut short by
a time limit would otherwise report nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser):
    parser.addoption("--bench-compile", choices=("auto", "on", "off"), default="auto",
                     help="torch.compile(reference) cases: auto runs them on CUDA only (compiling on the CPU "
                          "takes minutes), on everywhere, off nowhere")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before pytest-benchmark's own pytest_configure builds its session, which rejects only + disable.
    disable_typed = "--benchmark-disable" in config.invocation_params.args
    if config.getoption("benchmark_only", False) and not disable_typed:
        config.option.benchmark_enable = True


@pytest.fixture(scope="session")
def compile_mode(pytestconfig) -> str:
    return pytestconfig.getoption("--bench-compile")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    fixture = item.funcargs.get("benchmark") if call.when == "call" else None
    stats = getattr(getattr(fixture, "stats", None), "stats", None)
    if stats is not None:
        info = fixture.extra_info
        item.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"[bench] {item.nodeid}: median {stats.median * 1e3:.3f} ms ({info.get('case', '')} vs "
            f"{info.get('baseline', '')}, {info.get('device', '')})")
