"""The GRPO loss options dapo, cispo, token_weights and entropy_coef (and the entropy metric), Triton paths
against float64 references written from each formula (not from ``grpo_loss_reference``), plus that reference.

Tolerances as tests/test_grpo_loss.py: values ~2e-5; gradients relative to the largest, 1e-5 for float32 and
1e-2 for bfloat16; the fused-linear path with bf16 weights 2e-2.
"""

import pytest
import torch

from gotr1.kernels.grpo_loss import (
    LOSS_TYPES,
    METRIC_NAMES,
    fused_linear_grpo_loss,
    grpo_loss,
    grpo_loss_reference,
    selective_logprobs,
)
from test_grpo_loss import DEVICE, GRAD_RTOL, VALUE_TOL, make_batch

ENTROPY_RTOL = dict(rtol=2e-5, atol=5e-5)  # H = lse - E[z]: an absolute error of a few ulp of |z|


def paper_loss(logits, token_ids, mask, advantages, old_logp, ref_logp, *, temperature=1.0, eps_low=0.2,
               eps_high=0.2, beta=0.04, loss_type="grpo", importance_level="token", reduction="mean",
               token_weights=None, cispo_eps_high=5.0, entropy_coef=0.0):
    """The loss from the papers' formulas, in float64, with a plain full softmax (no shared code)."""
    z = logits.double() / temperature
    log_p = torch.log_softmax(z, -1)
    m = mask.bool()
    ids = token_ids.clamp(0, z.shape[-1] - 1)
    logp = log_p.gather(-1, ids[..., None])[..., 0]
    entropy = -(log_p.exp() * log_p).sum(-1)
    A = advantages.double()[:, None]
    old = logp.detach() if old_logp is None else old_logp.double()
    log_ratio = (logp - old) * m
    n = m.sum(1, keepdim=True).clamp(min=1)
    if importance_level == "sequence":
        log_ratio = (log_ratio.sum(1, keepdim=True) / n).expand_as(logp)
    ratio = log_ratio.exp()
    if loss_type == "cispo":  # MiniMax-M1 / TRL: -sg(min(ratio, eps_max)) * A * logp
        pg = -torch.clamp(ratio, max=cispo_eps_high).detach() * A * logp
    else:
        pg = -torch.min(ratio * A, ratio.clamp(1 - eps_low, 1 + eps_high) * A)
    x = ref_logp.double() - logp
    kl = x.exp() - x - 1
    w = torch.ones_like(logp) if token_weights is None else token_weights.double()
    per_token = w * (pg + beta * kl - entropy_coef * entropy) * m
    if reduction == "none":
        return per_token.sum(1)
    if loss_type in ("dapo", "cispo"):  # TRL: sum / active tokens
        return per_token.sum() / m.sum().clamp(min=1)
    return (per_token.sum(1) / n[:, 0]).mean()


def grads_of(fn, batch, logits_dtype=None, upstream=None, **kwargs):
    logits = batch["logits"] if logits_dtype is None else batch["logits"].to(logits_dtype)
    logits = logits.detach().requires_grad_()
    out = fn(logits, batch["token_ids"], batch["mask"], batch["advantages"], batch["old_logp"], batch["ref_logp"],
             **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    (loss if upstream is None else (loss * upstream).sum()).backward()
    return loss.detach(), (out[1] if isinstance(out, tuple) else None), logits.grad


def check(batch, rtol_grad, upstream=None, **kwargs):
    loss, metrics, grad = grads_of(grpo_loss, batch, upstream=upstream, **kwargs)
    ref_loss, _, ref_grad = grads_of(paper_loss, batch, torch.float64,
                                     None if upstream is None else upstream.double(), **kwargs)
    torch.testing.assert_close(loss.double(), ref_loss, **VALUE_TOL, msg=lambda m: f"loss: {m}")
    torch.testing.assert_close(grad.double(), ref_grad, rtol=rtol_grad, atol=rtol_grad * ref_grad.abs().max().item(),
                               msg=lambda m: f"d logits: {m}")
    # the plain-torch reference agrees with the paper formula too (float64, autograd)
    r_loss, r_metrics, r_grad = grads_of(grpo_loss_reference, batch, torch.float64,
                                         None if upstream is None else upstream.double(), **kwargs)
    torch.testing.assert_close(r_loss, ref_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r_grad, ref_grad, rtol=1e-9, atol=1e-12)
    for name in METRIC_NAMES:
        torch.testing.assert_close(metrics[name].double(), r_metrics[name].double(), **ENTROPY_RTOL,
                                   msg=lambda m: f"metric {name}: {m}")
    return metrics


def weights_for(batch, kind="random"):
    B, T = batch["mask"].shape
    if kind == "ones":
        return torch.ones(B, T, device=DEVICE)
    w = torch.rand(B, T, device=DEVICE) * 2
    w[:, ::3] = 0  # some tokens masked out by weight, as top-entropy masking does
    return w


def test_names():
    assert "dapo" in LOSS_TYPES and "cispo" in LOSS_TYPES and METRIC_NAMES[-1] == "entropy_mean"


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["dapo", "cispo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_types_match_paper(loss_type, importance_level, beta):
    batch = make_batch(3, 7, 1000, torch.float32)
    metrics = check(batch, GRAD_RTOL[torch.float32], loss_type=loss_type, importance_level=importance_level,
                    beta=beta, cispo_eps_high=1.3, temperature=0.9)
    if loss_type == "cispo":
        assert metrics["clip_low_frac"] == 0 and metrics["dual_clip_frac"] == 0


def test_cispo_default_bound_and_no_old_logp():
    batch = make_batch(3, 7, 1000, torch.float32)
    check(batch, GRAD_RTOL[torch.float32], loss_type="cispo")
    batch["old_logp"] = None
    check(batch, GRAD_RTOL[torch.float32], loss_type="cispo", cispo_eps_high=0.5)
    with pytest.raises(ValueError, match="delta"):
        grpo_loss(**batch, loss_type="cispo", delta=2.0)
    with pytest.raises(ValueError, match="cispo_eps_high"):
        grpo_loss(**batch, loss_type="cispo", cispo_eps_high=0.0)


@pytest.mark.parametrize("importance_level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "cispo"])
def test_token_weights_and_entropy_match_paper(importance_level, loss_type):
    batch = make_batch(3, 7, 1000, torch.float32)
    check(batch, GRAD_RTOL[torch.float32], importance_level=importance_level, loss_type=loss_type,
          token_weights=weights_for(batch), entropy_coef=0.05, temperature=1.3)


def test_reduction_none_with_everything():
    batch = make_batch(3, 7, 1000, torch.float32)
    upstream = torch.rand(3, device=DEVICE)
    check(batch, GRAD_RTOL[torch.float32], upstream=upstream, reduction="none", loss_type="dapo",
          token_weights=weights_for(batch), entropy_coef=-0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_image_vocabulary_size(dtype):
    batch = make_batch(2, 3, 16384 + 7, dtype)
    check(batch, GRAD_RTOL[dtype], loss_type="cispo", token_weights=weights_for(batch), entropy_coef=0.1,
          cispo_eps_high=1.2)


def test_bf16_sequence_level():
    batch = make_batch(3, 7, 1000, torch.bfloat16)
    check(batch, GRAD_RTOL[torch.bfloat16], loss_type="dapo", importance_level="sequence",
          token_weights=weights_for(batch), entropy_coef=0.03)


def test_token_weights_ones_equal_none_and_zeros_silence_tokens():
    batch = make_batch(3, 7, 1000, torch.float32)
    plain, plain_metrics, plain_grad = grads_of(grpo_loss, batch, entropy_coef=0.1)
    ones, ones_metrics, ones_grad = grads_of(grpo_loss, batch, entropy_coef=0.1,
                                             token_weights=weights_for(batch, "ones"))
    torch.testing.assert_close(ones, plain, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ones_grad, plain_grad, rtol=1e-6, atol=1e-7)
    for name in METRIC_NAMES:
        torch.testing.assert_close(ones_metrics[name], plain_metrics[name])
    w = torch.ones_like(weights_for(batch, "ones"))
    w[0] = 0
    w[:, 2] = 0
    loss, metrics, grad = grads_of(grpo_loss, batch, None, torch.ones(3, device=DEVICE), entropy_coef=0.1,
                                   token_weights=w, reduction="none")
    assert loss[0] == 0
    assert grad[0].abs().max() == 0 and grad[:, 2].abs().max() == 0
    assert metrics["num_tokens"] == plain_metrics["num_tokens"]  # counts stay those of the mask
    zero, _, zero_grad = grads_of(grpo_loss, batch, entropy_coef=0.1, token_weights=torch.zeros_like(w))
    assert zero == 0 and zero_grad.abs().max() == 0


def test_dapo_mean_is_sum_over_active_tokens():
    batch = make_batch(4, 9, 1000, torch.float32)
    mean, metrics = grpo_loss(**batch, loss_type="dapo")
    sums, _ = grpo_loss(**batch, loss_type="dapo", reduction="none")
    torch.testing.assert_close(mean, sums.sum() / metrics["num_tokens"], rtol=1e-6, atol=1e-7)
    bnpo, _ = grpo_loss(**batch, loss_type="bnpo")
    torch.testing.assert_close(mean, bnpo)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("V", "temperature"), [(1000, 0.7), (16384 + 7, 1.0)])
def test_entropy_is_minus_p_log_p(V, temperature, dtype):
    B, T = 3, 7
    logits = (torch.randn(B, T, V) * 3).to(dtype).to(DEVICE)
    logits[0, 0, : V // 2] = -float("inf")  # zero-probability entries: 0 log 0 = 0
    ids = torch.randint(V // 2, V, (B, T), device=DEVICE)
    logp, entropy = selective_logprobs(logits, ids, temperature, with_entropy=True)
    p = torch.softmax(logits.double() / temperature, -1)
    expected = -torch.where(p > 0, p * p.log(), 0).sum(-1)
    torch.testing.assert_close(entropy.double(), expected, **ENTROPY_RTOL)
    torch.testing.assert_close(logp, selective_logprobs(logits, ids, temperature))
    # the loss's metric: token mean over valid tokens
    mask = torch.ones(B, T, dtype=torch.bool, device=DEVICE)
    mask[1, 3:] = False
    adv = torch.randn(B, device=DEVICE)
    _, metrics = grpo_loss(logits, ids, mask, adv, beta=0.0, temperature=temperature)
    torch.testing.assert_close(metrics["entropy_mean"].double(), expected[mask].mean(), **ENTROPY_RTOL)


# ---------------------------------------------------------------------------------------------------------
# fused_linear_grpo_loss
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("importance_level", "reduction"), [("token", "mean"), ("sequence", "mean"),
                                                              ("token", "none")])
@pytest.mark.parametrize("loss_type", ["dapo", "cispo"])
def test_fused_linear_matches_paper(dtype, importance_level, reduction, loss_type):
    B, T, H, V = 3, 7, 32, 1000
    batch = make_batch(B, T, V, torch.float32)
    hidden = torch.randn(B, T, H, device=DEVICE)
    weight = torch.randn(V, H, device=DEVICE) / H ** 0.5
    weights = weights_for(batch)
    kwargs = dict(loss_type=loss_type, importance_level=importance_level, reduction=reduction,
                  token_weights=weights, entropy_coef=0.05, cispo_eps_high=1.3, temperature=0.9)
    args = (batch["token_ids"], batch["mask"], batch["advantages"], batch["old_logp"], batch["ref_logp"])
    upstream = torch.rand(B, device=DEVICE) if reduction == "none" else torch.ones((), device=DEVICE)
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = paper_loss(h64 @ w64.t(), *args, **kwargs)
    (ref * upstream.double()).sum().backward()
    h, w = hidden.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_()
    loss, metrics = fused_linear_grpo_loss(h, w, *args, chunk_size=8, **kwargs)
    (loss * upstream).sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=tol, atol=tol)
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())
    if dtype == torch.float32:
        _, ref_metrics = grpo_loss_reference(hidden @ weight.t(), *args, **kwargs)
        for name in METRIC_NAMES:
            torch.testing.assert_close(metrics[name], ref_metrics[name], **ENTROPY_RTOL)
