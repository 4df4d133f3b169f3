"""Shared pieces of the pytest-benchmark suite (``test_bench_*.py``): devices, skips and the case record.

Every case calls :func:`record` so that ``benchmarks/report.py`` can pair it with its baseline: the case's
label, the label(s) of its baseline case(s) in the same group with the same shape, device and ``variant``
(what else tells parametrized cases apart: the metric, the loss case), and optionally the bytes a call
must move (for GB/s) and the items it produces (ratios are then per item, for baselines that run on fewer
items, as the reference generation loop does on a GPU).
"""

from __future__ import annotations

import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
NO_CUDA = "needs a CUDA device (the Triton kernels and CUDA graphs are not compiled on the CPU)"


def record(benchmark, case: str, baseline: str | list[str], shape, device: str, **more) -> None:
    """Set the case's ``extra_info``: case, baseline(s), shape, device, and ``variant`` / ``bytes`` / ``items`` /
    anything else worth keeping (``variant`` defaults to "")."""
    more.setdefault("variant", "")
    benchmark.extra_info.update(case=case, baseline=baseline, shape=list(shape), device=str(device), **more)


def synced(fn, device: str):
    """``fn`` followed by a CUDA synchronisation on a CUDA device, so the wall time covers the device's work."""
    if not str(device).startswith("cuda"):
        return fn

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out

    return call


def compiled(fn, device: str, mode: str):
    """``torch.compile(fn)``, or a skip that says why (``mode``: the ``--bench-compile`` option)."""
    import pytest

    if mode == "off":
        pytest.skip("torch.compile cases are off (--bench-compile=off)")
    if mode == "auto" and not str(device).startswith("cuda"):
        pytest.skip("torch.compile on the CPU spends minutes building kernels; run with --bench-compile=on")
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python / platform")
    return torch.compile(fn)
