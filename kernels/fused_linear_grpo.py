"""GRPO loss straight from hidden states and an output head, never materialising ``[B, T, V]`` logits.

For the ~102k-entry text vocabulary the logits of a GRPO batch (16 x 600 x 102400 in bf16 is 2 GB, and eager
autograd keeps several float32 copies) dominate memory. Here the valid tokens are processed in chunks of
``chunk_size`` rows: each chunk's logits ``h_c @ W^T`` live only while the kernels read them. Padded tokens
are dropped before the matmuls, so padding costs neither FLOPs nor memory.

Two schedules, chosen per call:

* one pass (token-level importance, scalar loss): the gradient of every token is known in the forward, up
  to the upstream scalar, so each chunk runs logits -> forward kernel -> backward kernel in place
  (``d z = G (onehot - softmax) / tau``) -> ``d h_c = d z @ W``, ``d W += d z^T @ h_c``; the backward only
  scales the stored gradients. Three matmuls, the minimum.
* two passes (sequence-level importance, whose ratio needs the whole sequence, or ``reduction="none"``,
  whose per-sequence upstream gradients only the backward knows): the forward keeps per-token ``lse`` and
  ``logp`` only; the backward recomputes each chunk's logits (one extra matmul) and proceeds as above.

``d W`` accumulates in the weight's dtype and is skipped when the head is frozen (LoRA).
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton
from .grpo_reference import LossOptions, check_inputs, finish_metrics, grpo_loss_reference
from .tuning import KERNELS, chunk_rows, tuned_config

try:
    from ._grpo_kernels import (
        backward_rows,
        entropy_terms,
        flat_rows,
        flat_weights,
        forward_rows,
        objective_rows,
        sequence_weights,
    )
except ImportError:  # pragma: no cover - no triton: use_triton() is then always False
    pass

def _chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def _chunk_logits(h_chunk, weight):
    """``[n, 1, V]`` logits of a chunk: each compacted row is its own "sequence" (T = 1) for the kernels."""
    return (h_chunk @ weight.t()).unsqueeze(1)


def _chunk_grads(logits, h_chunk, chunk, weight, ids, lse, coef, scale, temperature, d_hidden, d_weight,
                 ecoef=None, entropy=None):
    """Overwrite a chunk's logits with d logits, then accumulate ``d h = d z @ W`` and ``d W += d z^T @ h``."""
    d_logits = backward_rows(logits, ids, lse, coef, scale, temperature=temperature, out=logits, ecoef=ecoef,
                             entropy=entropy).squeeze(1)
    if d_hidden is not None:
        d_hidden.index_copy_(0, chunk, d_logits @ weight)
    if d_weight is not None:
        d_weight.addmm_(d_logits.t(), h_chunk)


class _FusedLinearGRPOFunction(torch.autograd.Function):
    """(hidden, weight) -> loss (scalar, or ``[B]`` sums), metric sums ``[6]``, token counts ``[B]``."""

    @staticmethod
    def forward(ctx, hidden, weight, token_ids, mask, advantages, old_logp, ref_logp, token_weights, opts, chunk_size,
                want):
        B, T, H = hidden.shape
        ids, valid, adv, old, ref = flat_rows(token_ids, mask, advantages, old_logp, ref_logp)
        tok_w = flat_weights(token_weights)
        seq_weight, counts = sequence_weights(valid, B, T, opts)
        rows = valid.nonzero().squeeze(1)  # the one host sync: chunking needs the number of valid tokens
        h = hidden.reshape(B * T, H)
        ctx.opts, ctx.chunk_size, ctx.want = opts, chunk_size, want
        ctx.one_pass = opts.importance_level == "token" and opts.reduction == "mean" and any(want)
        if ctx.one_pass:
            loss, sums, ctx.grads = _one_pass(h, weight, rows, ids, adv, old, ref, tok_w, seq_weight, T, opts,
                                              chunk_size, want)
        else:
            lse, logp, entropy = _logprob_pass(h, weight, rows, ids, opts.temperature, chunk_size)
            loss_rows, coef, stats = objective_rows(logp, valid, adv, old, ref, seq_weight, B, T, opts, tok_w, entropy)
            bonus, ecoef = entropy_terms(valid, tok_w, entropy, seq_weight.repeat_interleave(T), opts)
            if bonus is not None:
                loss_rows = loss_rows + bonus
            loss = loss_rows.sum() if opts.reduction == "mean" else loss_rows.view(B, T).sum(1)
            sums = stats.sum(1)
            saved = () if ecoef is None else (ecoef, entropy)
            ctx.save_for_backward(hidden, weight, ids, rows, lse, coef, seq_weight, *saved)
        ctx.mark_non_differentiable(sums, counts)
        return loss, sums, counts

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums, _grad_counts):
        if ctx.one_pass:  # gradients for an upstream 1 were computed in the forward
            d_hidden, d_weight = (None if d is None else d * grad_loss.to(d.dtype) for d in ctx.grads)
            return d_hidden, d_weight, *(None,) * 9
        hidden, weight, ids, rows, lse, coef, seq_weight, *saved = ctx.saved_tensors
        B, T, H = hidden.shape
        h = hidden.reshape(B * T, H)
        row_scale = (grad_loss.to(torch.float32) * seq_weight).view(-1, 1)  # g_b w_b
        grad = (coef.view(B, T) * row_scale).reshape(-1)
        egrad, entropy = ((saved[0].view(B, T) * row_scale).reshape(-1), saved[1]) if saved else (None, None)
        d_hidden = torch.zeros_like(h) if ctx.want[0] else None
        d_weight = torch.zeros_like(weight) if ctx.want[1] else None
        one = torch.ones(1, dtype=torch.float32, device=h.device)
        for part in _chunks(rows.numel(), ctx.chunk_size):
            chunk = rows[part]
            h_chunk = h.index_select(0, chunk)
            _chunk_grads(_chunk_logits(h_chunk, weight), h_chunk, chunk, weight, ids[chunk], lse[chunk], grad[chunk],
                         one, ctx.opts.temperature, d_hidden, d_weight,
                         None if egrad is None else egrad[chunk], None if entropy is None else entropy[chunk])
        return None if d_hidden is None else d_hidden.view(B, T, H), d_weight, *(None,) * 9


def _logprob_pass(h, weight, rows, ids, temperature, chunk_size):
    """Per-token ``lse``, ``logp`` and entropy ``[B*T]`` (0 at padding), chunk by chunk."""
    lse = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    logp, entropy = torch.zeros_like(lse), torch.zeros_like(lse)
    ones = torch.ones(min(rows.numel(), chunk_size), dtype=torch.uint8, device=h.device)
    for part in _chunks(rows.numel(), chunk_size):
        chunk = rows[part]
        logits = _chunk_logits(h.index_select(0, chunk), weight)
        lse[chunk], logp[chunk], entropy[chunk] = forward_rows(logits, ids[chunk], ones[:chunk.numel()],
                                                               temperature=temperature, entropy=True)
    return lse, logp, entropy


def _one_pass(h, weight, rows, ids, adv, old, ref, tok_w, seq_weight, T, opts, chunk_size, want):
    """Loss, metric sums and the gradients (d hidden, d weight; None where not wanted) for an upstream 1."""
    n = rows.numel()
    seq = rows // T
    # Compacted rows are their own "sequences" (T = 1): per-row copies of the per-sequence values.
    ids_r, adv_r, w_r = ids[rows], adv[seq], seq_weight[seq].contiguous()
    old_r = None if old is None else old[rows]
    ref_r = None if ref is None else ref[rows]
    tok_w_r = None if tok_w is None else tok_w[rows]
    f32 = dict(dtype=torch.float32, device=h.device)
    loss, stats = torch.zeros(n, **f32), torch.zeros(6, n, **f32)
    d_hidden = torch.zeros_like(h) if want[0] else None
    d_weight = torch.zeros_like(weight) if want[1] else None
    ones = torch.ones(min(n, chunk_size), dtype=torch.uint8, device=h.device)
    for part in _chunks(n, chunk_size):
        chunk = rows[part]
        h_chunk = h.index_select(0, chunk)
        logits = _chunk_logits(h_chunk, weight)
        objective = (adv_r[part], None if old_r is None else old_r[part], None if ref_r is None else ref_r[part],
                     w_r[part], opts, None if tok_w_r is None else tok_w_r[part])
        valid = ones[:chunk.numel()]
        lse, _, loss[part], coef, stats[:, part] = forward_rows(logits, ids_r[part], valid,
                                                                temperature=opts.temperature, objective=objective)
        bonus, ecoef = entropy_terms(valid, objective[5], stats[5, part], w_r[part], opts)
        if bonus is not None:
            loss[part] += bonus
        _chunk_grads(logits, h_chunk, chunk, weight, ids_r[part], lse, coef, w_r[part], opts.temperature,
                     d_hidden, d_weight, ecoef, None if ecoef is None else stats[5, part].contiguous())
    d_hidden = None if d_hidden is None else d_hidden.view(-1, T, h.shape[1])
    return loss.sum(), stats.sum(1), (d_hidden, d_weight)


def fused_linear_grpo_loss(
    hidden, weight, token_ids, mask, advantages, old_logp=None, ref_logp=None, *,
    temperature=1.0, eps_low=0.2, eps_high=0.2, delta=None, beta=0.04, loss_type="grpo",
    max_len=None, importance_level="token", reduction="mean", chunk_size=None, token_weights=None,
    cispo_eps_high=5.0, entropy_coef=0.0,
):
    """GRPO loss of the logits ``hidden @ weight.T``, computed chunk by chunk without materialising them.

    Parameters
    ----------
    hidden : torch.Tensor
        ``[B, T, H]`` float32 / bfloat16 / float16 hidden states; row ``[b, t]`` predicts ``token_ids[b, t]``.
    weight : torch.Tensor
        ``[V, H]`` output head (no bias), same dtype as ``hidden``.
    token_ids, mask, advantages, old_logp, ref_logp, temperature, eps_low, eps_high, delta, beta, loss_type, \
max_len, importance_level, reduction, token_weights, cispo_eps_high, entropy_coef
        As in :func:`gotr1.kernels.grpo_loss.grpo_loss`.
    chunk_size : int or None
        Valid tokens per chunk; by default as many as keep one chunk's logits near the ``fused_linear``
        configuration's size (512 MiB, or this GPU's tuned value; see ``gotr1.kernels.tuning``). Smaller
        chunks use less memory but re-read ``d W`` more often and run smaller matmuls.

    Returns
    -------
    loss, metrics
        As in :func:`gotr1.kernels.grpo_loss.grpo_loss`. Gradients flow to ``hidden`` and ``weight``.
    """
    opts = LossOptions(temperature, eps_low, eps_high, delta, beta, loss_type, max_len, importance_level, reduction,
                       cispo_eps_high, entropy_coef)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
        got = getattr(hidden, "shape", type(hidden).__name__)
        raise ValueError(f"hidden must be a floating [B, T, H] tensor; got {got}")
    B, T, H = hidden.shape
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != H or weight.shape[0] < 1:
        got = getattr(weight, "shape", None)
        raise ValueError(f"weight must be a [V, H={H}] tensor matching hidden {list(hidden.shape)}; got {got}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(f"weight ({weight.dtype}, {weight.device}) must match hidden "
                         f"({hidden.dtype}, {hidden.device})")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    check_inputs(B, T, hidden.device, token_ids, mask, advantages, old_logp, ref_logp, beta, token_weights)
    if not use_triton(hidden) or hidden.dtype == torch.float64:
        return grpo_loss_reference(
            hidden @ weight.t(), token_ids, mask, advantages, old_logp, ref_logp, temperature=temperature,
            eps_low=eps_low, eps_high=eps_high, delta=delta, beta=beta, loss_type=loss_type, max_len=max_len,
            importance_level=importance_level, reduction=reduction, token_weights=token_weights,
            cispo_eps_high=cispo_eps_high, entropy_coef=entropy_coef)
    if chunk_size is None:
        V = weight.shape[0]
        config = (tuned_config("fused_linear", hidden.device, V=V, H=H) if hidden.is_cuda
                  else KERNELS["fused_linear"].default)
        chunk_size = chunk_rows(config, V, hidden.element_size())
    want = (torch.is_grad_enabled() and hidden.requires_grad, torch.is_grad_enabled() and weight.requires_grad)
    loss, sums, counts = _FusedLinearGRPOFunction.apply(hidden, weight, token_ids, mask, advantages, old_logp,
                                                        ref_logp, token_weights, opts, chunk_size, want)
    return loss, finish_metrics(sums, counts)
