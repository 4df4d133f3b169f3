"""GRPO policy loss over ``[B, T, V]`` logits with fused Triton forward and backward passes.

Public API (everything the trainer needs is importable from here):

* :func:`group_advantages` - group-relative advantages (``advantages.py``);
* :func:`selective_logprobs` - no-grad fp32 log-probs of the chosen tokens (old / reference policies);
* :func:`grpo_loss` - clipped-ratio surrogate + k3 KL, a ``torch.autograd.Function`` that keeps only
  per-token scalars between forward and backward (never the softmax);
* :func:`grpo_loss_reference` - the same in plain torch (``grpo_reference.py``);
* :func:`fused_linear_grpo_loss` - the loss straight from hidden states and the head's weight, never
  materialising the logits (``fused_linear_grpo.py``).

Which implementation runs follows ``_dispatch.use_triton``: compiled Triton on CUDA, the Triton interpreter
on CPU when ``TRITON_INTERPRET=1``, else the torch reference. The GRPO conventions (``docs/architecture.md``)
are spelled out in ``grpo_reference.py``; kernel formulas and derivatives in ``_grpo_kernels.py``. The names
of the loss types (``LOSS_TYPES``), advantage scalings (``SCALES``) and metrics (``METRIC_NAMES``) are
defined here once; gotr1's configs and trainer import them.
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton
from .advantages import SCALES, group_advantages, group_advantages_reference
from .fused_linear_grpo import fused_linear_grpo_loss
from .grpo_reference import (
    LOSS_TYPES,
    METRIC_NAMES,
    LossOptions,
    check_inputs,
    check_logits,
    finish_metrics,
    grpo_loss_reference,
    selective_logprobs_reference,
)


try:
    from ._grpo_kernels import (
        backward_rows,
        flat_rows,
        flat_weights,
        forward_rows,
        loss_objective,
        sequence_weights,
    )
except ImportError:  # pragma: no cover - no triton: use_triton() is then always False
    pass

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel_path(logits: torch.Tensor) -> bool:
    """Triton for fp32/bf16/fp16 logits where the dispatch rule allows it; float64 stays on torch."""
    return use_triton(logits) and logits.dtype in KERNEL_DTYPES


class _GRPOLossFunction(torch.autograd.Function):
    """logits -> loss (scalar, or ``[B]`` sums), metric sums ``[6]`` and token counts ``[B]`` (no gradient)."""

    @staticmethod
    def forward(ctx, logits, token_ids, mask, advantages, old_logp, ref_logp, token_weights, opts, inplace_backward):
        B, T, _ = logits.shape
        ids, valid, adv, old, ref = flat_rows(token_ids, mask, advantages, old_logp, ref_logp)
        seq_weight, counts = sequence_weights(valid, B, T, opts)
        lse, loss, coef, stats, ecoef = loss_objective(logits, ids, valid, adv, old, ref, seq_weight, B, T, opts,
                                                       flat_weights(token_weights))
        if ecoef is None:
            ctx.save_for_backward(logits, ids, lse, coef, seq_weight)
        else:
            ctx.save_for_backward(logits, ids, lse, coef, seq_weight, ecoef, stats[5].clone())
        ctx.opts, ctx.inplace = opts, inplace_backward
        sums = stats.sum(1)
        ctx.mark_non_differentiable(sums, counts)
        return loss.sum() if opts.reduction == "mean" else loss.view(B, T).sum(1), sums, counts

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums, _grad_counts):
        logits, ids, lse, coef, seq_weight, *entropy = ctx.saved_tensors
        ecoef, ent = entropy if entropy else (None, None)
        scale = (grad_loss.to(torch.float32) * seq_weight).contiguous()  # g_b w_b
        out = logits if ctx.inplace and logits.stride(-1) == 1 else None
        dlogits = backward_rows(logits, ids, lse, coef, scale, temperature=ctx.opts.temperature, out=out,
                                ecoef=ecoef, entropy=ent)
        return dlogits, *(None,) * 8


def grpo_loss(
    logits, token_ids, mask, advantages, old_logp=None, ref_logp=None, *,
    temperature=1.0, eps_low=0.2, eps_high=0.2, delta=None, beta=0.04, loss_type="grpo",
    max_len=None, importance_level="token", reduction="mean", inplace_backward=False, token_weights=None,
    cispo_eps_high=5.0, entropy_coef=0.0,
):
    """GRPO clipped-ratio policy loss with a k3 KL penalty, fused forward and backward.

    Parameters
    ----------
    logits : torch.Tensor
        ``[B, T, V]`` float32 / bfloat16 / float16 (float64 runs the torch reference). Row ``[b, t]`` scores
        ``token_ids[b, t]`` (already shifted). The last dim must be contiguous for a copy-free pass;
        row strides are free, so ``head(h)[:, :-1]`` works as is.
    token_ids : torch.Tensor
        ``[B, T]`` integer ids in ``[0, V)`` wherever ``mask`` is set (others are never read).
    mask : torch.Tensor
        ``[B, T]`` bool (or 0/1): which tokens count. Fully masked rows are allowed.
    advantages : torch.Tensor
        ``[B]`` per-sequence advantages (e.g. from :func:`group_advantages`); a constant.
    old_logp, ref_logp : torch.Tensor or None
        ``[B, T]`` log-probs of the sampling and reference policies (e.g. from :func:`selective_logprobs`).
        ``old_logp=None`` means on-policy (ratio 1 with gradient); ``ref_logp`` is needed when ``beta > 0``.
    temperature : float
        Log-probs are those of ``softmax(logits / temperature)``, computed in float32.
    eps_low, eps_high : float
        Ratio clip range ``[1 - eps_low, 1 + eps_high]``, both >= 0.
    delta : float or None
        Dual clip (> 1): for ``A < 0`` the token loss is ``min(loss, -delta * A)``.
    beta : float
        KL weight, >= 0; 0 skips the KL and ignores ``ref_logp``.
    loss_type : {"grpo", "bnpo", "dr_grpo", "dapo", "cispo"}
        Normalisation (see :func:`gotr1.kernels.grpo_reference.reduce_token_loss`); ``dr_grpo`` divides by
        ``B * max_len``, ``max_len`` defaulting to T; ``dapo`` (TRL's) sums and divides by the active tokens
        (of this call; for the whole batch's count use ``reduction="none"``). ``cispo`` (MiniMax-M1, TRL's)
        has per-token loss ``-sg(min(ratio, cispo_eps_high)) * A * logp`` (+ the KL) and dapo's normalisation;
        it ignores ``eps_low``/``eps_high`` and rejects ``delta``.
    importance_level : {"token", "sequence"}
        Per-token ratio, or one ratio per sequence from its masked mean log-ratio.
    reduction : {"mean", "none"}
        ``"none"`` returns per-sequence loss sums ``[B]`` (and ``metrics["token_counts"]``) so a caller can
        normalise a sequence's chain tokens and image tokens, computed by two calls, together.
    inplace_backward : bool
        Write ``d logits`` into the logits buffer during backward (saves ``B*T*V`` elements of memory); the
        logits' values are destroyed, so use it only when nothing else reads them afterwards.
    token_weights : torch.Tensor or None
        ``[B, T]`` float weights >= 0 multiplying each token's loss (policy term, KL and entropy bonus) and so
        its gradient (truncated importance sampling, top-entropy masking). Token counts, the reduction's
        normalisation and the metrics stay those of ``mask``. None: all ones.
    cispo_eps_high : float
        ``loss_type="cispo"``'s upper bound on the importance weight (the bound itself, as TRL's
        ``epsilon_high`` under cispo; default 5.0, TRL's recommendation), > 0. No lower bound.
    entropy_coef : float
        Entropy bonus: each valid token's loss gets ``- entropy_coef * H_t`` (times its token weight), ``H_t``
        the entropy of ``softmax(logits_t / temperature)``, computed online in fp32 with its exact gradient.

    Returns
    -------
    loss : torch.Tensor
        float32 scalar, or ``[B]`` sums with ``reduction="none"``.
    metrics : dict[str, torch.Tensor]
        float32, no gradient, masked token means: ``ratio_mean``, ``clip_low_frac`` (``A < 0`` and ratio below
        the range; 0 for cispo), ``clip_high_frac`` (for cispo: ``A > 0`` and ratio above ``cispo_eps_high``),
        ``dual_clip_frac``, ``kl_mean``, ``entropy_mean`` (mean entropy over valid tokens, unweighted by
        ``token_weights``); plus ``num_tokens`` (scalar) and
        ``token_counts`` ``[B]``.
    """
    opts = LossOptions(temperature, eps_low, eps_high, delta, beta, loss_type, max_len, importance_level, reduction,
                       cispo_eps_high, entropy_coef)
    check_logits(logits)
    B, T, _ = logits.shape
    check_inputs(B, T, logits.device, token_ids, mask, advantages, old_logp, ref_logp, beta, token_weights)
    if not _kernel_path(logits):
        return grpo_loss_reference(
            logits, token_ids, mask, advantages, old_logp, ref_logp, temperature=temperature, eps_low=eps_low,
            eps_high=eps_high, delta=delta, beta=beta, loss_type=loss_type, max_len=max_len,
            importance_level=importance_level, reduction=reduction, token_weights=token_weights,
            cispo_eps_high=cispo_eps_high, entropy_coef=entropy_coef)
    loss, sums, counts = _GRPOLossFunction.apply(logits, token_ids, mask, advantages, old_logp, ref_logp,
                                                 token_weights, opts, inplace_backward)
    return loss, finish_metrics(sums, counts)


@torch.no_grad()
def selective_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0,
                       with_entropy: bool = False):
    """Log-probs of the chosen tokens, ``log_softmax(logits / temperature)[token_ids]``, without gradient.

    Parameters
    ----------
    logits : torch.Tensor
        ``[B, T, V]`` float32 / bfloat16 / float16 (float64 runs the torch reference).
    token_ids : torch.Tensor
        ``[B, T]`` integer ids in ``[0, V)``.
    temperature : float
        Sampling temperature, > 0.
    with_entropy : bool
        Also return each token's entropy ``-sum_j p_j log p_j`` of ``p = softmax(logits / temperature)``
        (same pass, online; e.g. for top-entropy masking).

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``[B, T]`` float32 (float64 for float64 logits), from one pass over V with an online log-sum-exp;
        with ``with_entropy`` the pair ``(logp, entropy)``.
    """
    check_logits(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    B, T, _ = logits.shape
    if not isinstance(token_ids, torch.Tensor) or list(token_ids.shape) != [B, T] or token_ids.is_floating_point():
        got = getattr(token_ids, "shape", token_ids)
        raise ValueError(f"token_ids must be an integer tensor of shape {[B, T]}; got {got}")
    if not _kernel_path(logits):
        return selective_logprobs_reference(logits, token_ids, temperature, with_entropy=with_entropy)
    ids = token_ids.reshape(-1).to(torch.int64).contiguous()
    valid = torch.ones(B * T, dtype=torch.uint8, device=logits.device)
    out = forward_rows(logits, ids, valid, temperature=temperature, entropy=with_entropy)
    if with_entropy:
        return out[1].view(B, T), out[2].view(B, T)
    return out[1].view(B, T)


__all__ = [
    "LOSS_TYPES", "METRIC_NAMES", "SCALES",
    "group_advantages", "group_advantages_reference", "selective_logprobs", "selective_logprobs_reference",
    "grpo_loss", "grpo_loss_reference", "fused_linear_grpo_loss",
]
