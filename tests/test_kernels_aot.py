"""Every Triton kernel variant the launchers make compiles for sm_90 (H100 / H200) on this CPU-only machine:
``python -m gotr1.kernels.aot`` in a subprocess (the tests decorate the kernels for the interpreter; compiling needs
them decorated for the compiler). Skipped, with the reason, where this Triton cannot compile for CUDA here."""

import json
import os
import subprocess
import sys

import pytest

KERNELS = {"_forward_kernel", "_backward_kernel", "_objective_kernel", "_sample_kernel", "_group_advantages_kernel"}


def _variants(tmp_path):
    """The compiled variants and the printed table, or a skip with the reason this machine cannot compile.

    Run outside the repository root: there ``python -m`` would import the uninstalled source tree."""
    out = tmp_path / "aot.json"
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, "-m", "gotr1.kernels.aot", "--arch", "90", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    if done.returncode == 2:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _variants(tmp_path_factory.mktemp("aot"))


def test_every_kernel_variant_compiles_for_sm90_within_its_resources(compiled):
    report, table = compiled
    variants = [v for v in report["variants"] if not v["case"].startswith("tuning probe")]
    assert {v["kernel"] for v in variants} == KERNELS
    assert len(variants) >= 15, "each launcher's variants: losses, flags, sampler modes, advantage scalings"
    for v in variants:
        where = f"{v['kernel']} ({v['case']}, {v['options']})"
        assert v["error"] is None, where
        assert 0 <= v["shared_bytes"] <= report["shared_limit"], where
        if v["registers"] is not None:  # cuobjdump ships with Triton's CUDA backend
            assert v["registers"] <= 255 and v["local_bytes"] == 0, f"{where}: spills {v['local_bytes']} B"
    assert "| _sample_kernel |" in table, "the table is printed"


def test_what_the_tuner_prunes_cannot_win(compiled):
    """The row kernels' pruning (gotr1.kernels.tuning): another num_stages builds the very same binary, and a tile
    of 128 elements per thread needs far more registers than the defaults."""
    report, _ = compiled
    for kernel in ("_forward_kernel", "_backward_kernel"):
        ours = [v for v in report["variants"] if v["kernel"] == kernel and v["error"] is None]
        by_options = {json.dumps(v["options"], sort_keys=True): v for v in ours}
        for probe in (v for v in ours if v["case"].startswith("tuning probe {'num_stages'")):
            same = by_options[json.dumps({**probe["options"], "num_stages": 3}, sort_keys=True)]
            assert probe["binary"] == same["binary"], f"{kernel}: num_stages={probe['options']['num_stages']}"
        (wide,) = [v for v in ours if v["case"] == "tuning probe {'BLOCK_V': 8192, 'num_warps': 2}"]
        default_regs = max(v["registers"] or 0 for v in ours if not v["case"].startswith("tuning probe"))
        if wide["registers"] is not None:
            assert wide["registers"] >= 96 > default_regs, (wide["registers"], default_regs)
