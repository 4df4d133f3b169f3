"""benchmarks/gpu_check.sh on the CPU, its Python steps stubbed: which steps each plan runs, in what order, that
every plan fits one device call by construction, the fallbacks (no build tools, no pytest-benchmark, no peft),
and that the test step selects the kernel suites."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"

# A stand-in for python: logs its arguments (and PYTHONPATH) one line per call, writes the preflight's flags
# from $STUB_FLAGS, fails `pip install` with $STUB_PIP_RC and has no pybind11.
STUB = r"""#!/usr/bin/env bash
echo "$* | PYTHONPATH=${PYTHONPATH:-}" >> "$STUB_LOG"
case "$*" in
  *"-m pybind11"*) exit 1 ;;
  *gpu_preflight.py*) printf '%b' "${STUB_FLAGS:-}" > "$2/preflight.env" ;;
  *"-m pip install"*) exit "${STUB_PIP_RC:-0}" ;;
esac
exit 0
"""


def run_check(tmp_path, *args, flags="", pip_rc=0, budget=None):
    stub, log, out = tmp_path / "python", tmp_path / "calls.log", tmp_path / "out"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log), "STUB_FLAGS": flags, "STUB_PIP_RC": str(pip_rc),
           "OUT": str(out), "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    if budget is not None:
        env["GPU_CHECK_SECONDS"] = str(budget)
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, [c for c in calls if c.strip() != "-P -c  | PYTHONPATH="], out


def step_of(call: str) -> str:
    """Which step a logged call belongs to."""
    for marker, step in (("gpu_preflight.py", "preflight"), ("-m pip install", "install"), ("import gotr1", "import"),
                         ("-m pytest -v", "tests"), ("bench_generate.py", "bench_generate"),
                         ("--fsdp", "bench_grpo_step_fsdp"), ("bench_grpo_step.py", "bench_grpo_step"),
                         ("bench_sampling.py", "bench_sampling"), ("gotr1.kernels.tune", "tune_kernels"),
                         ("--benchmark-only", "bench_suite"), ("report.py", "report"),
                         ("bench_evaluators.py", "bench_evaluators"), ("bench_grpo_loss.py", "bench_grpo_loss")):
        if marker in call:
            return step
    return call


def plan_budgets(text: str) -> dict[str, int]:
    return {name: int(seconds) for name, seconds in re.findall(r"plan (\w+) \((\d+) s of 540", text)}


def test_every_plan_fits_one_device_call_and_never_measured_steps_come_first(tmp_path):
    done, calls, _ = run_check(tmp_path, "--list")
    assert done.returncode == 0 and calls == []
    budgets = plan_budgets(done.stdout)
    assert set(budgets) == {"first", "second", "measured"}
    assert all(seconds <= 540 for seconds in budgets.values()), budgets
    first = done.stdout.split("plan second")[0]
    order = re.findall(r"^  (\w+) \d+ s$", first, re.M)
    assert order == ["preflight", "install", "tests", "bench_generate", "bench_grpo_step"]
    assert "bench_grpo_loss" not in first, "already measured: not in the default plan"


def test_the_default_plan_runs_its_steps_in_order_and_prints_the_plan_first(tmp_path):
    done, calls, out = run_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("plan first (")
    assert [step_of(c) for c in calls] == ["preflight", "install", "import", "tests", "bench_generate",
                                           "bench_grpo_step"]
    tests = next(c for c in calls if step_of(c) == "tests")
    assert "-m gpu or kernels" in tests and "-o addopts" not in tests
    assert all(f"{name}: exit 0" in done.stdout for name in ("preflight", "install", "tests", "bench_generate"))


def test_named_steps_run_after_preflight_and_install_in_plan_order(tmp_path):
    done, calls, _ = run_check(tmp_path, "tune_kernels", "bench_sampling")
    assert done.returncode == 0, done.stdout
    assert [step_of(c) for c in calls] == ["preflight", "install", "import", "bench_sampling", "tune_kernels"]
    tune = next(c for c in calls if step_of(c) == "tune_kernels")
    assert "--budget-seconds 155" in tune  # its limit less 15 s: the tuner stops itself and keeps what it has


def test_a_plan_over_the_budget_is_refused_before_anything_runs(tmp_path):
    done, calls, _ = run_check(tmp_path, budget=300)
    assert done.returncode == 2 and calls == [] and "more than GPU_CHECK_SECONDS=300" in done.stdout
    for args in (("--plan", "nope"), ("bench_nothing",)):
        done, calls, _ = run_check(tmp_path, *args)
        assert done.returncode == 2 and calls == [] and "unknown" in done.stdout


def test_without_build_tools_the_source_tree_goes_on_the_path(tmp_path):
    done, calls, out = run_check(tmp_path, "--plan", "first", flags="EDITABLE_OK=0\n")
    assert done.returncode == 0, done.stdout
    assert "install" not in [step_of(c) for c in calls], "no pip install attempt without build tools"
    later = [c for c in calls if step_of(c) in ("tests", "bench_generate", "bench_grpo_step")]
    assert later and all(f"PYTHONPATH={out}/src" in c for c in later)
    tree = out / "src" / "gotr1"
    assert (tree / "kernels").resolve() == REPO / "kernels" and (tree / "rollout").resolve() == REPO / "gotr1" / "rollout"
    # The tree imports as the package, kernels included (the editable install's finder is set aside), and the
    # canvas, not built here, fails only where it is used, saying how to build it.
    probe = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
             "import gotr1.kernels.grpo_loss, gotr1.grpo.trainer, gotr1.layout as layout, gotr1.chain as chain; "
             "print(gotr1.kernels.__file__); layout.render_layout(chain.parse_chain(''))")
    ran = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(out / "src")}, timeout=300)
    assert ran.stdout.strip() == str(tree / "kernels" / "__init__.py"), ran.stderr[-2000:]
    assert "gotr1._canvas, the compiled box rasterizer, is not built" in ran.stderr


def test_a_failed_editable_install_falls_back_to_the_source_tree(tmp_path):
    done, calls, out = run_check(tmp_path, pip_rc=1)
    assert "install: exit 1" in done.stdout and "source tree on PYTHONPATH" in done.stdout
    assert f"PYTHONPATH={out}/src" in next(c for c in calls if step_of(c) == "tests")


def test_missing_plugins_and_peft_skip_what_needs_them_and_keep_pytest_running(tmp_path):
    done, calls, _ = run_check(tmp_path, "--plan", "measured", flags="HAS_BENCHMARK=0\nHAS_PEFT=0\n")
    assert "bench_suite: skipped: pytest-benchmark is missing" in done.stdout
    assert [step_of(c) for c in calls] == ["preflight", "install", "import", "bench_evaluators", "bench_grpo_loss"]
    done, calls, _ = run_check(tmp_path, flags="HAS_BENCHMARK=0\nHAS_PEFT=0\n")
    tests = next(c for c in calls if step_of(c) == "tests")
    assert "-o addopts=-ra --strict-markers --import-mode=importlib" in tests  # without --benchmark-disable
    assert "bench_grpo_step: skipped: peft is missing" in done.stdout and done.returncode == 1


def test_the_test_step_selects_every_cuda_test_and_the_kernel_suites(tmp_path):
    """Its file list holds every test file with a ``gpu`` or ``kernels`` test, and ``-m "gpu or kernels"`` over
    it collects the kernel suites' ordinary tests (which run on CUDA tensors there), not only the gpu-marked ones."""
    script = SCRIPT.read_text()
    listed = set(shlex.split(re.search(r"TEST_FILES=\((.*?)\)", script, re.S).group(1)))
    marked = {f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py")
              if re.search(r"pytest\.mark\.gpu|pytestmark = pytest\.mark\.kernels", p.read_text())}
    assert listed == marked
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "gpu or kernels", *sorted(listed)], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    for suite, test in (("test_grpo_loss.py", "test_fused_linear_matches_reference"),
                        ("test_advantages.py", "test_matches_float64_reference"),
                        ("test_sampling.py", "test_empirical_frequencies_match_reference")):
        assert any(suite in c and test in c for c in collected), (suite, done.stdout[-2000:])
    assert not any("test_generate.py" in c and "cuda" not in c for c in collected), "only test_generate's gpu tests"


@pytest.mark.skipif(not SCRIPT.exists(), reason="no script")
def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
