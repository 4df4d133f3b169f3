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

``d W`` accumulates in the weight's dtype and is skipped when the head is frozen. A frozen head with a few
trained rows (LoRA's GoT tag rows over the 102400-row text head) passes them as ``rows`` / ``row_ids``: their
logit columns are ``h_c @ rows^T``, their gradient ``d z[:, ids]^T @ h_c`` (float32), and the full ``[V, H]``
``d W`` (a third of the matmul time and a head-sized buffer) is never formed.
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


class _Head:
    """The output head of a call: ``weight`` ``[V, H]`` with rows ``row_ids`` replaced by ``rows`` when given.

    Gradient buffers: ``d_weight`` (the weight's dtype) when the weight is trained, ``d_rows`` (float32) when
    rows are given; the full ``[V, H]`` gradient is never formed for a frozen weight with trained rows.
    """

    def __init__(self, weight, row_ids, rows, want_weight: bool, want_rows: bool):
        self.weight, self.row_ids = weight, row_ids
        self.rows = None if rows is None else rows.detach().to(weight.dtype)
        # d h = d z @ W_eff = d z @ W + d z[:, ids] @ (rows - W[ids]): W_eff itself is never built.
        self.row_delta = None if rows is None else self.rows - weight.index_select(0, row_ids)
        self.d_weight = torch.zeros_like(weight) if want_weight else None
        self.d_rows = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device) if want_rows else None

    def logits(self, h_chunk):
        """``[n, 1, V]`` logits of a chunk: each compacted row is its own "sequence" (T = 1) for the kernels."""
        logits = h_chunk @ self.weight.t()
        if self.rows is not None:
            logits.index_copy_(1, self.row_ids, h_chunk @ self.rows.t())
        return logits.unsqueeze(1)

    def grads(self, logits, h_chunk, chunk, ids, lse, coef, scale, temperature, d_hidden, ecoef=None, entropy=None):
        """Overwrite a chunk's logits with d logits, then accumulate ``d h = d z @ W`` into ``d_hidden`` (rows
        ``chunk``) and the head's gradients ``d W += d z^T @ h`` (or, for trained rows, ``d z[:, ids]^T @ h``)."""
        d_logits = backward_rows(logits, ids, lse, coef, scale, temperature=temperature, out=logits, ecoef=ecoef,
                                 entropy=entropy).squeeze(1)
        d_row_logits = None if self.rows is None else d_logits.index_select(1, self.row_ids)
        if d_hidden is not None:
            d_h = d_logits @ self.weight
            if d_row_logits is not None:
                d_h += d_row_logits @ self.row_delta
            d_hidden.index_copy_(0, chunk, d_h)
        if self.d_weight is not None:
            self.d_weight.addmm_(d_logits.t(), h_chunk)
        if self.d_rows is not None:
            self.d_rows.addmm_(d_row_logits.t().float(), h_chunk.float())

    def weight_grads(self, grad_loss=None, rows_dtype=None):
        """(d weight, d rows) scaled by the upstream ``grad_loss`` (None: as accumulated), rows in ``rows_dtype``."""
        out = []
        for d in (self.d_weight, self.d_rows):
            if d is not None and grad_loss is not None:
                d = d * grad_loss.to(d.dtype)
            out.append(d)
        if out[1] is not None:
            out[1] = out[1].to(rows_dtype)
        return tuple(out)


class _FusedLinearGRPOFunction(torch.autograd.Function):
    """(hidden, weight, rows) -> loss (scalar, or ``[B]`` sums), metric sums ``[6]``, token counts ``[B]``."""

    @staticmethod
    def forward(ctx, hidden, weight, rows, row_ids, token_ids, mask, advantages, old_logp, ref_logp, token_weights, opts,
                chunk_size, want):
        B, T, H = hidden.shape
        ids, valid, adv, old, ref = flat_rows(token_ids, mask, advantages, old_logp, ref_logp)
        tok_w = flat_weights(token_weights)
        seq_weight, counts = sequence_weights(valid, B, T, opts)
        rows_ = valid.nonzero().squeeze(1)  # the one host sync: chunking needs the number of valid tokens
        h = hidden.reshape(B * T, H)
        ctx.opts, ctx.chunk_size, ctx.want = opts, chunk_size, want
        ctx.rows_dtype = None if rows is None else rows.dtype
        ctx.one_pass = opts.importance_level == "token" and opts.reduction == "mean" and any(want)
        if ctx.one_pass:
            head = _Head(weight, row_ids, rows, want[1], want[2])
            loss, sums, ctx.d_hidden = _one_pass(h, head, rows_, ids, adv, old, ref, tok_w, seq_weight, T, opts,
                                                 chunk_size, want[0])
            ctx.head = head
        else:
            head = _Head(weight, row_ids, rows, False, False)
            lse, logp, entropy = _logprob_pass(h, head, rows_, ids, opts.temperature, chunk_size)
            loss_rows, coef, stats = objective_rows(logp, valid, adv, old, ref, seq_weight, B, T, opts, tok_w, entropy)
            bonus, ecoef = entropy_terms(valid, tok_w, entropy, seq_weight.repeat_interleave(T), opts)
            if bonus is not None:
                loss_rows = loss_rows + bonus
            loss = loss_rows.sum() if opts.reduction == "mean" else loss_rows.view(B, T).sum(1)
            sums = stats.sum(1)
            saved = () if ecoef is None else (ecoef, entropy)
            ctx.has_rows = rows is not None
            ctx.save_for_backward(hidden, weight, *((rows, row_ids) if rows is not None else ()), ids, rows_, lse, coef,
                                  seq_weight, *saved)
        ctx.mark_non_differentiable(sums, counts)
        return loss, sums, counts

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums, _grad_counts):
        nothing = (None,) * 10
        if ctx.one_pass:  # gradients for an upstream 1 were computed in the forward
            d_hidden = None if ctx.d_hidden is None else ctx.d_hidden * grad_loss.to(ctx.d_hidden.dtype)
            d_weight, d_rows = ctx.head.weight_grads(grad_loss, ctx.rows_dtype)
            return d_hidden, d_weight, d_rows, *nothing
        hidden, weight, *saved = ctx.saved_tensors
        rows, row_ids = (saved.pop(0), saved.pop(0)) if ctx.has_rows else (None, None)
        ids, valid_rows, lse, coef, seq_weight, *saved = saved
        B, T, H = hidden.shape
        h = hidden.reshape(B * T, H)
        row_scale = (grad_loss.to(torch.float32) * seq_weight).view(-1, 1)  # g_b w_b
        grad = (coef.view(B, T) * row_scale).reshape(-1)
        egrad, entropy = ((saved[0].view(B, T) * row_scale).reshape(-1), saved[1]) if saved else (None, None)
        head = _Head(weight, row_ids, rows, ctx.want[1], ctx.want[2])
        d_hidden = torch.zeros_like(h) if ctx.want[0] else None
        one = torch.ones(1, dtype=torch.float32, device=h.device)
        for part in _chunks(valid_rows.numel(), ctx.chunk_size):
            chunk = valid_rows[part]
            h_chunk = h.index_select(0, chunk)
            head.grads(head.logits(h_chunk), h_chunk, chunk, ids[chunk], lse[chunk], grad[chunk], one,
                       ctx.opts.temperature, d_hidden, None if egrad is None else egrad[chunk],
                       None if entropy is None else entropy[chunk])
        d_weight, d_rows = head.weight_grads(rows_dtype=ctx.rows_dtype)
        return None if d_hidden is None else d_hidden.view(B, T, H), d_weight, d_rows, *nothing


def _logprob_pass(h, head, rows, ids, temperature, chunk_size):
    """Per-token ``lse``, ``logp`` and entropy ``[B*T]`` (0 at padding), chunk by chunk."""
    lse = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    logp, entropy = torch.zeros_like(lse), torch.zeros_like(lse)
    ones = torch.ones(min(rows.numel(), chunk_size), dtype=torch.uint8, device=h.device)
    for part in _chunks(rows.numel(), chunk_size):
        chunk = rows[part]
        logits = head.logits(h.index_select(0, chunk))
        lse[chunk], logp[chunk], entropy[chunk] = forward_rows(logits, ids[chunk], ones[:chunk.numel()],
                                                               temperature=temperature, entropy=True)
    return lse, logp, entropy


def _one_pass(h, head, rows, ids, adv, old, ref, tok_w, seq_weight, T, opts, chunk_size, want_hidden):
    """Loss, metric sums and d hidden (None when not wanted) for an upstream 1; the head's gradients accumulate
    in ``head``."""
    n = rows.numel()
    seq = rows // T
    # Compacted rows are their own "sequences" (T = 1): per-row copies of the per-sequence values.
    ids_r, adv_r, w_r = ids[rows], adv[seq], seq_weight[seq].contiguous()
    old_r = None if old is None else old[rows]
    ref_r = None if ref is None else ref[rows]
    tok_w_r = None if tok_w is None else tok_w[rows]
    f32 = dict(dtype=torch.float32, device=h.device)
    loss, stats = torch.zeros(n, **f32), torch.zeros(6, n, **f32)
    d_hidden = torch.zeros_like(h) if want_hidden else None
    ones = torch.ones(min(n, chunk_size), dtype=torch.uint8, device=h.device)
    for part in _chunks(n, chunk_size):
        chunk = rows[part]
        h_chunk = h.index_select(0, chunk)
        logits = head.logits(h_chunk)
        objective = (adv_r[part], None if old_r is None else old_r[part], None if ref_r is None else ref_r[part],
                     w_r[part], opts, None if tok_w_r is None else tok_w_r[part])
        valid = ones[:chunk.numel()]
        lse, _, loss[part], coef, stats[:, part] = forward_rows(logits, ids_r[part], valid,
                                                                temperature=opts.temperature, objective=objective)
        bonus, ecoef = entropy_terms(valid, objective[5], stats[5, part], w_r[part], opts)
        if bonus is not None:
            loss[part] += bonus
        head.grads(logits, h_chunk, chunk, ids_r[part], lse, coef, w_r[part], opts.temperature, d_hidden, ecoef,
                   None if ecoef is None else stats[5, part].contiguous())
    d_hidden = None if d_hidden is None else d_hidden.view(-1, T, h.shape[1])
    return loss.sum(), stats.sum(1), d_hidden


def fused_linear_grpo_loss(
    hidden, weight, token_ids, mask, advantages, old_logp=None, ref_logp=None, *,
    temperature=1.0, eps_low=0.2, eps_high=0.2, delta=None, beta=0.04, loss_type="grpo",
    max_len=None, importance_level="token", reduction="mean", chunk_size=None, token_weights=None,
    cispo_eps_high=5.0, entropy_coef=0.0, rows=None, row_ids=None,
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
    rows, row_ids : torch.Tensor, optional
        ``[K, H]`` floating rows (any float dtype, cast to ``weight``'s for the matmuls) and their distinct int64
        ids ``[K]``: the head is ``weight`` with ``weight[row_ids]`` replaced by ``rows``, as in a PEFT
        trainable-tokens layer. ``weight`` must then be frozen: only ``rows`` are trained, and their gradient
        (float32, returned in their dtype) is computed without a ``[V, H]`` one.

    Returns
    -------
    loss, metrics
        As in :func:`gotr1.kernels.grpo_loss.grpo_loss`. Gradients flow to ``hidden`` and ``weight`` (or
        ``rows``).
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
    _check_rows(weight, rows, row_ids)
    check_inputs(B, T, hidden.device, token_ids, mask, advantages, old_logp, ref_logp, beta, token_weights)
    if not use_triton(hidden) or hidden.dtype == torch.float64:
        if rows is not None:  # what PEFT's layer computes, the gradient reaching the rows through the copy
            weight = weight.index_copy(0, row_ids, rows.to(weight.dtype))
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
    grad = torch.is_grad_enabled()
    want = (grad and hidden.requires_grad, grad and weight.requires_grad, grad and rows is not None and rows.requires_grad)
    loss, sums, counts = _FusedLinearGRPOFunction.apply(hidden, weight, rows, row_ids, token_ids, mask, advantages,
                                                        old_logp, ref_logp, token_weights, opts, chunk_size, want)
    return loss, finish_metrics(sums, counts)


def _check_rows(weight, rows, row_ids) -> None:
    """``rows`` / ``row_ids`` given together, shaped ``[K, H]`` / ``[K]`` (ids in range), over a frozen weight."""
    if (rows is None) != (row_ids is None):
        raise ValueError("rows and row_ids must be given together (trained rows of a frozen head) or not at all")
    if rows is None:
        return
    V, H = weight.shape
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or rows.shape[1] != H or not rows.is_floating_point():
        raise ValueError(f"rows must be a floating [K, H={H}] tensor; got {getattr(rows, 'shape', type(rows).__name__)}")
    if (not isinstance(row_ids, torch.Tensor) or row_ids.dtype != torch.int64 or row_ids.shape != rows.shape[:1]
            or row_ids.device != weight.device or rows.device != weight.device):
        raise ValueError(f"row_ids must be int64 [K={rows.shape[0]}] on {weight.device} beside rows there; got "
                         f"{getattr(row_ids, 'dtype', type(row_ids).__name__)} "
                         f"{tuple(getattr(row_ids, 'shape', ()))} on {getattr(row_ids, 'device', None)}")
    if weight.requires_grad:
        raise ValueError("weight must be frozen (requires_grad=False) when rows are given: only the rows are trained")
