"""GRPO loss kernels (Triton on CUDA, the interpreter on CPU) against the float64 torch reference.

Tolerances: values (log-probs, losses, metrics) are computed in float32 from the very input values the
reference sees, so they match to ~1e-5 relative for every input dtype. Gradients are stored in the logits'
dtype: ~1e-5 relative for float32, 1e-3 for float16, 1e-2 for bfloat16. The fused-linear path with bf16
weights is held to 2e-2: its matmuls round the logits and d logits to bf16.
"""

import pytest
import torch

from gotr1.kernels._dispatch import INTERPRETING, use_triton
from gotr1.kernels.grpo_loss import (
    fused_linear_grpo_loss,
    group_advantages,
    grpo_loss,
    grpo_loss_reference,
    selective_logprobs,
    selective_logprobs_reference,
)

# CUDA tensors where a GPU is present (compiled kernels), the interpreter elsewhere: `-m kernels` selects this
# suite, so that benchmarks/gpu_check.sh runs it compiled.
pytestmark = pytest.mark.kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
VALUE_TOL = dict(rtol=2e-5, atol=2e-5)
METRICS = ("ratio_mean", "clip_low_frac", "clip_high_frac", "dual_clip_frac", "kl_mean", "num_tokens")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_batch(B, T, V, dtype, *, temperature=1.0, G=None, device=DEVICE):
    """Random logits plus everything the loss takes, with padding and one fully masked sequence.

    old/ref log-probs are the true log-probs plus noise, so ratios land on both sides of the clip range.
    Advantages come from ``group_advantages`` over groups of ``G`` (default B) random rewards.
    """
    logits = (torch.randn(B, T, V) * 2).to(dtype)
    token_ids = torch.randint(0, V, (B, T))
    lengths = torch.randint(1, T + 1, (B,))
    mask = torch.arange(T)[None, :] < lengths[:, None]
    mask[B // 2] = False
    token_ids[~mask] = -100  # padding ids must never be read
    logp = selective_logprobs_reference(logits.double(), token_ids, temperature)
    old_logp = logp + 0.4 * torch.randn(B, T, dtype=torch.float64)
    ref_logp = logp + 0.3 * torch.randn(B, T, dtype=torch.float64)
    advantages = group_advantages(torch.rand(B, dtype=torch.float64), G or B).float()
    batch = dict(logits=logits, token_ids=token_ids, mask=mask, advantages=advantages,
                 old_logp=old_logp.float(), ref_logp=ref_logp.float())
    return {k: v.to(device) for k, v in batch.items()}


def run_loss(fn, batch, dtype_for_grad=None, upstream=None, **kwargs):
    """Loss, metrics and d loss / d logits of ``fn`` on ``batch`` (logits cast to ``dtype_for_grad``)."""
    logits = batch["logits"] if dtype_for_grad is None else batch["logits"].to(dtype_for_grad)
    logits = logits.detach().requires_grad_()
    loss, metrics = fn(logits, batch["token_ids"], batch["mask"], batch["advantages"],
                       batch["old_logp"], batch["ref_logp"], **kwargs)
    (loss if upstream is None else (loss * upstream).sum()).backward()
    return loss.detach(), metrics, logits.grad


def assert_matches_reference(batch, rtol_grad, upstream=None, **kwargs):
    loss, metrics, grad = run_loss(grpo_loss, batch, upstream=upstream, **kwargs)
    ref_loss, ref_metrics, ref_grad = run_loss(grpo_loss_reference, batch, torch.float64,
                                               None if upstream is None else upstream.double(), **kwargs)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, **VALUE_TOL, msg=lambda m: f"loss: {m}")
    assert grad.dtype == batch["logits"].dtype and grad.shape == batch["logits"].shape
    torch.testing.assert_close(grad.double(), ref_grad, rtol=rtol_grad, atol=rtol_grad * ref_grad.abs().max().item(),
                               msg=lambda m: f"d logits: {m}")
    for name in METRICS:
        torch.testing.assert_close(metrics[name].double(), ref_metrics[name].double(), **VALUE_TOL,
                                   msg=lambda m: f"metric {name}: {m}")
    torch.testing.assert_close(metrics["token_counts"], ref_metrics["token_counts"])
    return metrics


# ---------------------------------------------------------------------------------------------------------
# selective_logprobs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("B", "T", "V", "temperature"), [(3, 7, 1000, 1.0), (2, 5, 1000, 0.7), (1, 3, 16384 + 7, 1.3)])
def test_selective_logprobs(B, T, V, temperature, dtype):
    logits = (torch.randn(B, T, V) * 3).to(dtype).to(DEVICE)
    token_ids = torch.randint(0, V, (B, T), device=DEVICE)
    got = selective_logprobs(logits, token_ids, temperature)
    expected = selective_logprobs_reference(logits.double(), token_ids, temperature)
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got.double(), expected, **VALUE_TOL)


# ---------------------------------------------------------------------------------------------------------
# grpo_loss: every option against the reference
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("with_old", [True, False])
def test_options_match_reference(importance_level, loss_type, beta, with_old):
    batch = make_batch(4, 9, 1000, torch.float32, G=2)
    if not with_old:
        batch["old_logp"] = None
    assert_matches_reference(batch, GRAD_RTOL[torch.float32], importance_level=importance_level,
                             loss_type=loss_type, beta=beta)


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
@pytest.mark.parametrize("G", [2, 4, 16])
def test_dual_clip_temperature_and_group_sizes(importance_level, G):
    temperature = 0.8
    batch = make_batch(2 * G if G < 16 else G, 7, 1000, torch.float32, temperature=temperature, G=G)
    metrics = assert_matches_reference(batch, GRAD_RTOL[torch.float32], importance_level=importance_level,
                                       temperature=temperature, delta=1.5, eps_low=0.1, eps_high=0.28,
                                       loss_type="dr_grpo", max_len=11)
    if importance_level == "token":  # every branch of the surrogate is exercised
        assert metrics["clip_low_frac"] > 0 and metrics["clip_high_frac"] > 0 and metrics["dual_clip_frac"] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_half_precision_logits(dtype, importance_level):
    batch = make_batch(4, 11, 1000, dtype)
    assert_matches_reference(batch, GRAD_RTOL[dtype], importance_level=importance_level, delta=2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_image_vocabulary_size(dtype):
    batch = make_batch(2, 3, 16384 + 7, dtype)
    assert_matches_reference(batch, GRAD_RTOL[dtype], temperature=1.1)


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_reduction_none_with_uneven_upstream_gradient(importance_level):
    batch = make_batch(4, 7, 1000, torch.float32)
    upstream = torch.rand(4, device=DEVICE)  # weights per sequence, as a caller normalising itself would use
    assert_matches_reference(batch, GRAD_RTOL[torch.float32], upstream=upstream, reduction="none",
                             importance_level=importance_level)


def test_reduction_none_combines_two_calls_into_one_grpo_loss():
    """Chain part and image part of the same sequences, normalised together from per-sequence sums."""
    batch = make_batch(4, 9, 1000, torch.float32)
    whole, _ = grpo_loss(**batch)
    sums, counts = 0, 0
    for part in (slice(0, 4), slice(4, 9)):
        piece = {k: v if k == "advantages" else v[:, part] for k, v in batch.items()}
        piece_sums, metrics = grpo_loss(**piece, reduction="none")
        assert piece_sums.shape == (4,)
        sums, counts = sums + piece_sums, counts + metrics["token_counts"]
    torch.testing.assert_close((sums / counts.clamp(min=1)).mean(), whole, **VALUE_TOL)


def test_fully_masked_batch_gives_finite_zeros():
    batch = make_batch(3, 5, 1000, torch.float32)
    batch["mask"][:] = False
    loss, metrics, grad = run_loss(grpo_loss, batch)
    assert loss == 0 and (grad == 0).all()
    assert all(metrics[name] == 0 for name in METRICS)


# ---------------------------------------------------------------------------------------------------------
# Memory options: strided views and the in-place backward
# ---------------------------------------------------------------------------------------------------------


def test_shifted_view_and_inplace_backward():
    batch = make_batch(3, 8, 1000, torch.bfloat16)
    _, _, expected = run_loss(grpo_loss, batch)
    base = torch.cat([batch["logits"], torch.randn(3, 1, 1000, device=DEVICE).to(torch.bfloat16)], 1)
    base.requires_grad_()
    shifted = base * 1  # a non-leaf buffer the in-place backward may overwrite
    loss, _ = grpo_loss(shifted[:, :-1], batch["token_ids"], batch["mask"], batch["advantages"],
                        batch["old_logp"], batch["ref_logp"], inplace_backward=True)
    loss.backward()
    torch.testing.assert_close(base.grad[:, :-1], expected, rtol=0, atol=0)
    assert (base.grad[:, -1] == 0).all()
    torch.testing.assert_close(shifted.detach()[:, :-1], expected, rtol=0, atol=0)  # the buffer now holds d logits


# ---------------------------------------------------------------------------------------------------------
# fused_linear_grpo_loss
# ---------------------------------------------------------------------------------------------------------


def run_fused(batch, hidden, weight, **kwargs):
    hidden = hidden.detach().requires_grad_()
    weight = weight.detach().requires_grad_(weight.requires_grad)
    loss, metrics = fused_linear_grpo_loss(hidden, weight, batch["token_ids"], batch["mask"], batch["advantages"],
                                           batch["old_logp"], batch["ref_logp"], **kwargs)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    return loss.detach(), metrics, hidden.grad, weight.grad


@pytest.mark.parametrize(("dtype", "V", "importance_level", "reduction"), [
    (torch.float32, 1000, "token", "mean"),
    (torch.float32, 1000, "sequence", "none"),
    (torch.bfloat16, 1000, "token", "none"),
    (torch.float32, 16384 + 7, "token", "mean"),
])
def test_fused_linear_matches_reference(dtype, V, importance_level, reduction):
    B, T, H = 4, 7, 48
    batch = make_batch(B, T, V, torch.float32)
    hidden = torch.randn(B, T, H, device=DEVICE).to(dtype)
    weight = (torch.randn(V, H, device=DEVICE) / H**0.5).to(dtype).requires_grad_()
    # Old / reference log-probs near the head's own, so that clipping is exercised.
    logp = selective_logprobs_reference((hidden.double() @ weight.double().t()), batch["token_ids"])
    batch["old_logp"] = (logp + 0.3 * torch.randn_like(logp)).float()
    batch["ref_logp"] = (logp + 0.3 * torch.randn_like(logp)).float()
    kwargs = dict(importance_level=importance_level, reduction=reduction, delta=1.8, temperature=0.9)
    loss, metrics, d_hidden, d_weight = run_fused(batch, hidden, weight, chunk_size=5, **kwargs)

    h64, w64 = hidden.double().requires_grad_(), weight.detach().double().requires_grad_()
    logits = h64 @ w64.t()
    if dtype != torch.float32:  # the kernel path rounds the logits to the model's dtype, as nn.Linear does
        logits = logits + (logits.detach().to(dtype).double() - logits.detach())
    ref_loss, ref_metrics = grpo_loss_reference(logits, batch["token_ids"], batch["mask"], batch["advantages"],
                                                batch["old_logp"], batch["ref_logp"], **kwargs)
    (ref_loss if ref_loss.dim() == 0 else ref_loss.sum()).backward()
    # bf16 inputs: the matmuls themselves (bf16 products, bf16 d logits) bound the agreement.
    rtol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(loss.double(), ref_loss, rtol=max(rtol, 2e-5), atol=max(rtol, 2e-5))
    for got, ref, name in ((d_hidden, h64.grad, "hidden"), (d_weight, w64.grad, "weight")):
        assert got.dtype == dtype
        tol = max(rtol, 1e-4)
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item(),
                                   msg=lambda m: f"d {name}: {m}")
    for name in METRICS:
        torch.testing.assert_close(metrics[name].double(), ref_metrics[name].double(), rtol=max(rtol, 2e-5),
                                   atol=max(rtol, 2e-5))


def test_fused_linear_frozen_head():
    B, T, H, V = 3, 5, 16, 1000
    batch = make_batch(B, T, V, torch.float32)
    hidden = torch.randn(B, T, H, device=DEVICE)
    weight = torch.randn(V, H, device=DEVICE) / H**0.5
    _, _, d_hidden, d_weight = run_fused(batch, hidden, weight, beta=0.0, chunk_size=4)
    assert d_weight is None
    h64 = hidden.double().requires_grad_()
    ref_loss, _ = grpo_loss_reference(h64 @ weight.double().t(), batch["token_ids"], batch["mask"],
                                      batch["advantages"], batch["old_logp"], None, beta=0.0)
    ref_loss.backward()
    torch.testing.assert_close(d_hidden.double(), h64.grad, rtol=1e-4, atol=1e-4 * h64.grad.abs().max().item())


@pytest.mark.parametrize(("dtype", "importance_level", "reduction"), [
    (torch.float32, "token", "mean"),  # one pass: gradients computed in the forward
    (torch.float32, "sequence", "none"),  # two passes: recomputed in the backward
    (torch.bfloat16, "token", "mean"),
])
def test_fused_linear_trained_rows_of_a_frozen_head(dtype, importance_level, reduction):
    """A frozen head with a few trained rows (LoRA's GoT tag rows): the loss and the gradients of the hidden
    states and of the rows equal the reference's over the merged head, and no head-sized gradient is formed."""
    B, T, H, V = 3, 6, 16, 1000
    batch = make_batch(B, T, V, torch.float32)
    hidden = torch.randn(B, T, H, device=DEVICE).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, device=DEVICE) / H**0.5).to(dtype)
    row_ids = torch.tensor([3, 998, 17, 500], device=DEVICE)
    rows = (torch.randn(4, H, device=DEVICE) / H**0.5).requires_grad_()  # float32, as PEFT keeps them
    batch["token_ids"][0, :2] = row_ids[:2]  # targets among the trained rows too
    kwargs = dict(importance_level=importance_level, reduction=reduction, beta=0.04, temperature=0.9)
    loss, metrics = fused_linear_grpo_loss(hidden, weight, batch["token_ids"], batch["mask"], batch["advantages"],
                                           batch["old_logp"], batch["ref_logp"], rows=rows, row_ids=row_ids,
                                           chunk_size=5, **kwargs)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    assert rows.grad.dtype == torch.float32 and weight.grad is None

    h64, r64 = hidden.detach().double().requires_grad_(), rows.detach().double().requires_grad_()
    logits = h64 @ weight.double().index_copy(0, row_ids, r64.to(dtype).double()).t()
    if dtype != torch.float32:  # the kernel path rounds the logits to the model's dtype
        logits = logits + (logits.detach().to(dtype).double() - logits.detach())
    ref_loss, _ = grpo_loss_reference(logits, batch["token_ids"], batch["mask"], batch["advantages"],
                                      batch["old_logp"], batch["ref_logp"], **kwargs)
    (ref_loss if ref_loss.dim() == 0 else ref_loss.sum()).backward()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=tol, atol=tol)
    for got, ref, name in ((hidden.grad, h64.grad, "hidden"), (rows.grad, r64.grad, "rows")):
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item(),
                                   msg=lambda m: f"d {name}: {m}")


def test_fused_linear_trained_rows_bad_input():
    batch = make_batch(2, 3, 10, torch.float32, device="cpu")
    del batch["logits"]
    hidden, weight = torch.zeros(2, 3, 8), torch.zeros(10, 8)
    rows, ids = torch.zeros(2, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="together"):
        fused_linear_grpo_loss(hidden, weight, **batch, rows=rows)
    with pytest.raises(ValueError, match="rows must be"):
        fused_linear_grpo_loss(hidden, weight, **batch, rows=torch.zeros(2, 7), row_ids=ids)
    with pytest.raises(ValueError, match="row_ids"):
        fused_linear_grpo_loss(hidden, weight, **batch, rows=rows, row_ids=ids.int())
    with pytest.raises(ValueError, match="frozen"):
        fused_linear_grpo_loss(hidden, weight.requires_grad_(), **batch, rows=rows, row_ids=ids)


# ---------------------------------------------------------------------------------------------------------
# The reference itself, the dispatch rule and bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_reference_gradcheck(importance_level):
    batch = make_batch(3, 4, 6, torch.float64, device="cpu")
    logits = batch.pop("logits").requires_grad_()

    def loss(x):
        return grpo_loss_reference(x, **batch, beta=0.1, delta=1.5, temperature=0.9, importance_level=importance_level,
                                   reduction="none")[0]

    assert torch.autograd.gradcheck(loss, (logits,))


@pytest.mark.parametrize("fn", [grpo_loss, grpo_loss_reference])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_on_policy_means_old_logp_equal_to_logp(fn, importance_level):
    """old_logp=None: ratio 1 with the gradient of the ratio at old = logp (gradcheck cannot see this:
    the value never moves)."""
    batch = make_batch(3, 5, 100, torch.float32)
    batch["old_logp"] = None
    loss, _, grad = run_loss(fn, batch, importance_level=importance_level)
    batch["old_logp"] = selective_logprobs(batch["logits"], batch["token_ids"].clamp(min=0))
    loss_old, _, grad_old = run_loss(fn, batch, importance_level=importance_level)
    torch.testing.assert_close(loss, loss_old, **VALUE_TOL)
    torch.testing.assert_close(grad, grad_old, rtol=1e-5, atol=1e-5 * grad_old.abs().max().item())


def test_dispatch_rule():
    if torch.cuda.is_available():
        assert use_triton(torch.empty(1, device="cuda"))
    assert use_triton(torch.empty(1)) == INTERPRETING
    batch = make_batch(2, 3, 50, torch.float64)  # float64 always takes the reference path: exact agreement
    loss, _, _ = run_loss(grpo_loss, batch)
    ref_loss, _, _ = run_loss(grpo_loss_reference, batch)
    assert loss == ref_loss


@pytest.mark.parametrize(("change", "argument"), [
    (dict(token_ids=torch.zeros(2, 4, dtype=torch.int64)), "token_ids"),
    (dict(token_ids=torch.zeros(2, 3)), "token_ids"),
    (dict(mask=torch.ones(3, 3, dtype=torch.bool)), "mask"),
    (dict(advantages=torch.zeros(2, 3)), "advantages"),
    (dict(old_logp=torch.zeros(2, 2)), "old_logp"),
    (dict(ref_logp=torch.zeros(3, 2)), "ref_logp"),
    (dict(ref_logp=None), "ref_logp"),
    (dict(logits=torch.zeros(2, 3)), "logits"),
    (dict(eps_low=-0.1), "eps_low"),
    (dict(eps_high=-0.1), "eps_high"),
    (dict(beta=-1.0), "beta"),
    (dict(delta=0.5), "delta"),
    (dict(temperature=0.0), "temperature"),
    (dict(loss_type="ppo"), "loss_type"),
    (dict(importance_level="segment"), "importance_level"),
    (dict(reduction="sum"), "reduction"),
    (dict(max_len=0), "max_len"),
])
@pytest.mark.parametrize("fn", [grpo_loss, grpo_loss_reference])
def test_bad_input_names_the_argument(fn, change, argument):
    batch = make_batch(2, 3, 10, torch.float32, device="cpu")
    batch.update(change)
    with pytest.raises(ValueError, match=argument):
        fn(**batch)


def test_fused_linear_bad_input():
    batch = make_batch(2, 3, 10, torch.float32, device="cpu")
    del batch["logits"]
    with pytest.raises(ValueError, match="weight"):
        fused_linear_grpo_loss(torch.zeros(2, 3, 8), torch.zeros(10, 7), **batch)
    with pytest.raises(ValueError, match="hidden"):
        fused_linear_grpo_loss(torch.zeros(2, 8), torch.zeros(10, 8), **batch)
    with pytest.raises(ValueError, match="mask"):
        fused_linear_grpo_loss(torch.zeros(2, 3, 8), torch.zeros(10, 8), **{**batch, "mask": torch.ones(2, 4)})


# ---------------------------------------------------------------------------------------------------------
# CUDA only: compiled kernels at the production shapes (run by benchmarks/gpu_check.sh)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("B", "T", "V", "dtype"), [
    (8, 577, 16384, torch.bfloat16),  # image tokens
    (2, 601, 102400, torch.bfloat16),  # chain tokens
    (4, 129, 16384 + 7, torch.float32),
])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
@pytest.mark.gpu
@cuda_only
def test_cuda_production_shapes(B, T, V, dtype, importance_level):
    batch = make_batch(B, T, V, dtype, device="cuda")
    assert_matches_reference(batch, GRAD_RTOL[dtype], importance_level=importance_level, delta=2.0, beta=0.04)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_fused_linear_chain_shape(dtype):
    B, T, H, V = 2, 301, 2048, 102400
    batch = make_batch(B, T, 8, torch.float32, device="cuda")
    batch["token_ids"] = torch.randint(0, V, (B, T), device="cuda")
    batch["old_logp"] = None  # on-policy: those of make_batch belong to its V=8 logits
    hidden = torch.randn(B, T, H, device="cuda").to(dtype)
    weight = (torch.randn(V, H, device="cuda") / H**0.5).to(dtype).requires_grad_()
    loss, _, d_hidden, _ = run_fused(batch, hidden, weight, beta=0.0, chunk_size=256)
    logits = (hidden @ weight.detach().t()).double().requires_grad_()
    ref_loss, _ = grpo_loss_reference(logits, batch["token_ids"], batch["mask"], batch["advantages"],
                                      batch["old_logp"], None, beta=0.0)
    ref_loss.backward()
    ref_hidden = (logits.grad.to(dtype) @ weight.detach()).double()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(d_hidden.double(), ref_hidden, rtol=2e-2, atol=2e-2 * ref_hidden.abs().max().item())


@pytest.mark.gpu
@cuda_only
def test_cuda_group_advantages_large_batch():
    rewards = torch.rand(16 * 512, device="cuda")
    rewards[::7] = float("nan")
    from gotr1.kernels.advantages import group_advantages_reference

    for scale in ("group", "batch", "none"):
        expected = group_advantages_reference(rewards.double(), 16, scale)
        torch.testing.assert_close(group_advantages(rewards, 16, scale).double(), expected, rtol=1e-5, atol=1e-5)
