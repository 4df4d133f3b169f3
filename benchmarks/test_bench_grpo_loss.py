"""GRPO loss, forward + backward: gotr1's Triton kernels against the eager torch reference and
``torch.compile(reference)``, on ``bench_grpo_loss.py``'s inputs (bf16 logits, every token valid, beta 0.04).

On the CPU only a small case runs, with the eager reference alone (the kernels need CUDA; there the entry
points dispatch to the reference itself); the compile case runs with ``--bench-compile=on``.
"""

from __future__ import annotations

import pytest
from bench_grpo_loss import BYTES_PER_LOGIT_FLOOR, fwd_bwd, make_inputs, make_linear_inputs
from suite import CUDA, DEVICE, NO_CUDA, compiled, record, synced

from gotr1.kernels.grpo_loss import fused_linear_grpo_loss, grpo_loss, grpo_loss_reference

BASELINE = "eager reference"
ROUNDS = 20 if CUDA else 3
# (case, B*G, T, V): the script's shapes on CUDA, its small CPU case otherwise.
LOGIT_SHAPES = ([("image", 16, 576, 16384), ("image", 64, 576, 16384), ("chain", 16, 600, 102400)] if CUDA
                else [("image (small)", 4, 64, 16384)])
LINEAR_SHAPES = [(16, 600, 2048, 102400)] if CUDA else [(2, 64, 256, 16384)]  # B*G, T, H, V


def loss_function(impl: str, compile_mode: str):
    if impl == BASELINE:
        return grpo_loss_reference
    if impl == "torch.compile(ref)":
        return compiled(grpo_loss_reference, DEVICE, compile_mode)
    if not CUDA:
        pytest.skip(NO_CUDA)
    return grpo_loss


@pytest.mark.benchmark(group="grpo_loss")
@pytest.mark.parametrize("impl", [BASELINE, "gotr1", "torch.compile(ref)"])
@pytest.mark.parametrize("shape", LOGIT_SHAPES, ids=lambda s: f"{s[0]}-{s[1]}x{s[2]}x{s[3]}")
def test_grpo_loss(benchmark, shape, impl, compile_mode):
    name, B, T, V = shape
    loss_fn = loss_function(impl, compile_mode)
    logits, inputs = make_inputs(B, T, V, DEVICE)
    step = synced(fwd_bwd(loss_fn, logits, inputs), DEVICE)
    record(benchmark, impl, BASELINE, (B, T, V), DEVICE, bytes=BYTES_PER_LOGIT_FLOOR * B * T * V, variant=name)
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group="fused_linear_loss")
@pytest.mark.parametrize("impl", [BASELINE, "gotr1 fused_linear"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_linear_loss(benchmark, shape, impl):
    if impl != BASELINE and not CUDA:
        pytest.skip(NO_CUDA)
    B, T, H, V = shape
    hidden, weight, inputs = make_linear_inputs(B, T, H, V, DEVICE)
    loss_of = fused_linear_grpo_loss if impl != BASELINE else lambda h, w, **kw: grpo_loss_reference(h @ w.t(), **kw)

    def step():
        loss_of(hidden, weight, **inputs)[0].backward()
        hidden.grad = weight.grad = None

    record(benchmark, impl, BASELINE, (B, T, H, V), DEVICE)
    benchmark.pedantic(synced(step, DEVICE), rounds=ROUNDS, iterations=1, warmup_rounds=2)
