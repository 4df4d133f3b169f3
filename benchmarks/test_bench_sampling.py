"""One decode step's sampling: gotr1's ``sample`` against the eager torch sequence (``bench_sampling.py``'s
cases: 16 images with CFG over the 16384 codebook; 64 chains over the 102400 vocabulary with top-p 0.9).

On the CPU ``sample`` runs its torch reference (as the script's CPU table compares), fewer rounds.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from bench_sampling import CASES, eager_step
from suite import CUDA, DEVICE, record, synced

from gotr1.kernels.sampling import sample

BASELINE = "eager"
ROUNDS = 100 if CUDA else 3


@pytest.mark.benchmark(group="sampling")
@pytest.mark.parametrize("impl", [BASELINE, "gotr1 sample"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].split(":")[0])
def test_sampling(benchmark, case, impl):
    name, rows, vocab, cfg, kwargs = case
    images = rows // 2 if cfg else rows
    cond = (torch.randn(images, vocab, device=DEVICE) * 2.0).bfloat16()
    uncond = (torch.randn(images, vocab, device=DEVICE) * 2.0).bfloat16() if cfg else None
    if impl == BASELINE:
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        step = lambda: eager_step(cond, uncond, generator=generator, **kwargs)  # noqa: E731
    else:
        counter = itertools.count()
        step = lambda: sample(cond, uncond, seed=0, step=next(counter), **kwargs)  # noqa: E731
    record(benchmark, impl, BASELINE, (rows, vocab), DEVICE, bytes=rows * vocab * 2, variant=name)
    ids, logp = benchmark.pedantic(synced(step, DEVICE), rounds=ROUNDS, iterations=1, warmup_rounds=3)
    assert ids.shape == logp.shape == (images,)
