"""The benchmark suite cannot rot: one of its cases runs here (``--benchmark-disable``: the fixture calls
the function once), and ``benchmarks/report.py`` is checked on a hand-made pytest-benchmark JSON file."""

import importlib.util
import os
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """A module of ``benchmarks/`` (not a package; its modules import each other by name)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"gotr1_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


canvas_suite = _load("test_bench_canvas")
report = _load("report")


@pytest.mark.parametrize("case", list(canvas_suite.RUNS))
def test_the_canvas_benchmark_cases_run_and_record_their_pairing(benchmark, case):
    canvas_suite.test_canvas(benchmark, case)
    info = benchmark.extra_info
    assert info["case"] == case and info["baseline"] == canvas_suite.BASELINE and info["device"] == "cpu"
    assert info["bytes"] == canvas_suite.LAYOUTS * canvas_suite.SIZE**2 * 3


def _bench(group, case, median, baseline, shape=(4, 8), variant="", **extra):
    """One entry of pytest-benchmark's JSON ``benchmarks`` list, the fields report.py reads plus a few more."""
    info = dict(case=case, baseline=baseline, shape=list(shape), device="cpu", variant=variant, **extra)
    return {"group": group, "name": f"test_x[{case}]", "fullname": f"benchmarks/test_x.py::test_x[{case}]",
            "params": {"case": case}, "stats": {"min": median / 2, "max": median * 2, "mean": median,
                                                  "median": median, "rounds": 3, "iterations": 1},
            "options": {}, "extra_info": info}


RUN = {
    "machine_info": {"node": "testhost", "cpu": {"brand_raw": "Test CPU"}},
    "commit_info": {}, "datetime": "2025-01-01T00:00:00", "version": "5.2.3",
    "benchmarks": [
        _bench("loss", "eager", 0.020, "eager", bytes=2_000_000_000),
        _bench("loss", "fast", 0.005, "eager", bytes=2_000_000_000),
        _bench("loss", "eager", 0.100, "eager", shape=(8, 8), bytes=4_000_000_000),  # another shape: its own pair
        _bench("loss", "fast", 0.010, "eager", shape=(8, 8), bytes=4_000_000_000),
        _bench("gen", "ours", 2.0, ["hf", "loop"], items=32),
        _bench("gen", "hf", 3.0, ["hf", "loop"], items=32),
        _bench("gen", "loop", 1.0, ["hf", "loop"], items=2),  # 0.5 s per item against ours' 0.0625
    ],
}


def _rows(text: str, group: str) -> dict[str, list[str]]:
    """case|variant|shape -> the row's cells, from the group's table."""
    section = text.split(f"### {group}\n")[1].split("\n\n")[0].strip()
    rows = [line.strip("|").split(" | ") for line in section.splitlines()[2:]]
    return {"|".join(c.strip() for c in cells[:3]): [c.strip() for c in cells] for cells in rows}


def test_report_computes_ratios_per_pair_and_bandwidth_against_the_given_floor(tmp_path):
    path, out = tmp_path / "run.json", tmp_path / "RESULTS.md"
    path.write_text(json.dumps(RUN))
    report.main([str(path), "--markdown", str(out), "--bandwidth-gbs", "800"])
    text = out.read_text()
    assert "testhost (Test CPU)" in text and "800 GB/s (given)" in text
    loss = _rows(text, "loss")
    # cells: case, variant, shape, device, median ms, x eager, GB/s, % of floor
    assert loss["eager||4x8"][4:] == ["20.000", "1.00", "100", "12%"]
    assert loss["fast||4x8"][4:] == ["5.000", "4.00", "400", "50%"]
    assert loss["fast||8x8"][4:] == ["10.000", "10.00", "400", "50%"]
    gen = _rows(text, "gen")
    assert gen["ours||4x8"][4:] == ["2000.000", "1.50", "8.00"]  # per item: 0.5 s / 0.0625 s for the loop
    assert gen["loop||4x8"][4:] == ["1000.000", "0.19", "1.00"]  # 0.094 s per item for hf


def test_report_measures_the_floor_when_none_is_given():
    text = report.render(RUN)
    assert "cpu copy" in text
    assert _rows(text, "loss")["fast||4x8"][7].endswith("%")


def test_python_m_pytest_from_the_checkout_collects_against_a_plain_install(tmp_path):
    """``python -m pytest`` puts the current folder on ``sys.path``: run from the repository root after a plain
    ``pip install .`` (simulated: a copy of the installed package on a path with no editable import hook), both
    folders must still import the installed gotr1, not the bare source tree."""
    import shutil
    import subprocess
    import sysconfig

    import gotr1
    import gotr1._canvas
    import gotr1.kernels

    root = BENCHMARKS.parent
    site = tmp_path / "site"
    shutil.copytree(Path(gotr1.__file__).parent, site / "gotr1", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(gotr1.kernels.__file__).parent, site / "gotr1" / "kernels", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(gotr1._canvas.__file__, site / "gotr1")
    # -S: no site-packages processing, so the editable install's import hook stays out; PYTHONPATH gives the
    # copy and the third-party packages, in that order, after the current folder that -m prepends.
    env = {"PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]), "PATH": os.environ["PATH"],
           "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-S", "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_chain.py", "benchmarks/test_bench_canvas.py"],
                          capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "tests collected" in done.stdout, done.stdout[-2000:]
