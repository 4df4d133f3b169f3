"""Triton kernels of the GRPO loss and their launchers (private; the public API is ``grpo_loss.py``).

A "row" is one token position: a logits row ``z`` of V entries, its target id ``y``, a validity flag and
per-token scalars. Logits are viewed as ``[*, T, V]`` with arbitrary row strides (a shifted
``logits[:, :-1]`` view needs no copy); row ``r`` belongs to sequence ``r // T``, whose per-sequence values
(advantage, reduction weight, ...) are read from ``[B]`` arrays. The fused-linear path passes compacted rows
as ``[n, 1, V]`` (T = 1) with per-row copies of those values.

The reduction is folded into the kernels: the loss is ``sum_t w_b(t) m_t l_t`` with a per-sequence weight
``w_b`` (see :func:`sequence_weights`), so the backward needs ``G_t = dLoss/dlogp_t = g_b w_b m_t coef_t``
where ``coef_t = d l_t / d logp_t`` and ``g_b`` is the upstream gradient (one scalar, or one per sequence
for ``reduction="none"``).

Kernels:

* ``_forward_kernel``: one pass over the vocabulary per row with an online log-sum-exp in fp32, giving
  ``lse = log sum_j exp(z_j / tau)`` and ``logp = z_y / tau - lse``; for token-level importance it also
  evaluates the clipped surrogate and the KL (``_objective``) and writes only per-token scalars.
* ``_objective_kernel``: the same objective over precomputed ``[B, T]`` log-probs; sequence-level importance
  needs it (its ratio needs every token of the sequence, hence a second launch), and so does the
  fused-linear path when it cannot compute gradients during the forward.
* ``_backward_kernel``: ``d z_j = G (onehot_y(j) - softmax_j(z / tau)) / tau``, recomputing the softmax from
  the saved ``lse`` instead of storing it; with an entropy bonus (``l -= c u H``, ``E = c u g_b w_b``) also
  ``+ E p_j (log p_j + H) / tau``, since ``d H / d z_j = -p_j (log p_j + H) / tau``.

The forward also tracks ``sum_j exp(x_j - m) (x_j - m)`` beside the log-sum-exp, giving the entropy
``H = log s - sum_j e_j (x_j - m) / s`` (= ``lse - E[x]``) without the softmax. Token weights ``u_t``
multiply ``l_t`` and ``coef_t``; at sequence level the shared ratio's gradient carries the sequence's mean
token weight instead (``d/d logp_t sum_s u_s pg(r_b) = mean_s(u_s) d pg / d r_b`` per valid token).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grpo_reference import TOKEN_NORMALISED
from .tuning import tuned_config

# ---------------------------------------------------------------------------------------------------------
# Per-token objective (shared by the forward and objective kernels)
#
#   r = log_ratio, rho = exp(r), A = advantage
#   pg = -min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A)
#   The clipped branch is the min exactly when  (A < 0 and rho < 1-eps_low)  ["low clip"]
#                                            or (A > 0 and rho > 1+eps_high) ["high clip"];
#   there pg is constant in rho, elsewhere pg = -rho*A, so  d pg / d r = -A*rho  off the clips, 0 on them.
#   Dual clip (delta > 1): for A < 0, pg = min(pg, -delta*A); where the cap binds, d pg / d r = 0.
#   k3 KL with x = ref - logp:  kl = exp(x) - x - 1,  d kl / d logp = 1 - exp(x).
#
#   coef = d pg / d r + beta * d kl / d logp is d l / d logp at token level (d r / d logp = 1). At sequence
#   level r_b = sum_s m_s (logp_s - old_s) / n_b is shared by the n_b tokens of b, so
#   d/d logp_t sum_s m_s l_s = n_b * d pg / d r_b * m_t / n_b + m_t beta d kl_t: the same coef.
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _objective(log_ratio, adv, logp, ref, eps_low, eps_high, delta,
               HAS_DELTA: tl.constexpr, HAS_KL: tl.constexpr, CISPO: tl.constexpr):
    """Return (pg, d pg / d logp, kl, d kl / d logp, ratio, low clip, high clip, dual clip).

    CISPO: ``pg = -min(rho, eps_high) * A * logp`` with the capped weight a constant (``eps_high`` carries
    ``cispo_eps_high``), so ``d pg / d logp = -min(rho, eps_high) * A``; "high clip" marks a binding cap for A > 0.
    """
    ratio = tl.exp(log_ratio)
    if CISPO:
        weight = tl.minimum(ratio, eps_high)
        pg = -weight * adv * logp
        d_pg = -weight * adv
        low = (adv < 0) & (adv > 0)  # all False, with the right shape
        high = (adv > 0) & (ratio > eps_high)
    else:
        clipped = tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high)
        pg = -tl.minimum(ratio * adv, clipped * adv)
        low = (adv < 0) & (ratio < 1.0 - eps_low)
        high = (adv > 0) & (ratio > 1.0 + eps_high)
        d_pg = tl.where(low | high, 0.0, -adv * ratio)
    dual = low & (adv > 0)  # all False, with the right shape
    if HAS_DELTA:
        cap = -delta * adv
        dual = (adv < 0) & (pg > cap)
        pg = tl.where(dual, cap, pg)
        d_pg = tl.where(dual, 0.0, d_pg)
    kl = tl.zeros_like(logp)
    d_kl = tl.zeros_like(logp)
    if HAS_KL:
        x = ref - logp
        e = tl.exp(x)
        kl = e - x - 1.0
        d_kl = 1.0 - e
    return pg, d_pg, kl, d_kl, ratio, low, high, dual


@triton.jit
def _evaluate_rows(
    logp, rows, in_range, valid, n_rows, T, adv_ptr, old_ptr, ref_ptr, seq_log_ratio_ptr, seq_weight_ptr,
    tok_w_ptr, seq_tok_w_ptr, loss_ptr, coef_ptr, stats_ptr, eps_low, eps_high, delta, beta,
    SEQUENCE: tl.constexpr, HAS_OLD: tl.constexpr, HAS_KL: tl.constexpr, HAS_DELTA: tl.constexpr,
    CISPO: tl.constexpr, HAS_TOKW: tl.constexpr,
):
    """Load a block of rows' inputs, evaluate ``_objective`` and store the weighted loss ``w_b u_t l``, coef
    (``d (u_t l_t) / d logp_t`` summed over the sequence, see the header) and the masked metric terms, laid out
    as stats[>=5, n_rows]: ratio, low, high, dual clip flags, kl. ``u_t``: the token weight (1 without)."""
    seq = rows // T
    adv = tl.load(adv_ptr + seq, mask=valid, other=0.0)
    seq_weight = tl.load(seq_weight_ptr + seq, mask=valid, other=0.0)
    log_ratio = tl.zeros_like(logp)  # old_logp=None: ratio 1, d ratio / d logp = 1
    if SEQUENCE:
        log_ratio = tl.load(seq_log_ratio_ptr + seq, mask=valid, other=0.0)
    elif HAS_OLD:
        log_ratio = tl.where(valid, logp - tl.load(old_ptr + rows, mask=valid, other=0.0), 0.0)
    ref = logp
    if HAS_KL:
        ref = tl.load(ref_ptr + rows, mask=valid, other=0.0)
    pg, d_pg, kl, d_kl, ratio, low, high, dual = _objective(
        log_ratio, adv, logp, ref, eps_low, eps_high, delta, HAS_DELTA, HAS_KL, CISPO)
    loss = pg + beta * kl
    coef = d_pg + beta * d_kl
    if HAS_TOKW:
        tok_w = tl.load(tok_w_ptr + rows, mask=valid, other=0.0)
        loss = tok_w * loss
        coef = tok_w * coef
        if SEQUENCE and not CISPO:  # the shared ratio's gradient carries the sequence's mean token weight
            coef = tl.load(seq_tok_w_ptr + seq, mask=valid, other=0.0) * d_pg + tok_w * beta * d_kl
    tl.store(loss_ptr + rows, tl.where(valid, seq_weight * loss, 0.0), mask=in_range)
    tl.store(coef_ptr + rows, tl.where(valid, coef, 0.0), mask=in_range)
    tl.store(stats_ptr + rows, tl.where(valid, ratio, 0.0), mask=in_range)
    tl.store(stats_ptr + n_rows + rows, tl.where(valid, low.to(tl.float32), 0.0), mask=in_range)
    tl.store(stats_ptr + 2 * n_rows + rows, tl.where(valid, high.to(tl.float32), 0.0), mask=in_range)
    tl.store(stats_ptr + 3 * n_rows + rows, tl.where(valid, dual.to(tl.float32), 0.0), mask=in_range)
    tl.store(stats_ptr + 4 * n_rows + rows, tl.where(valid, kl, 0.0), mask=in_range)


@triton.jit
def _rows(valid_ptr, n_rows, BLOCK_T: tl.constexpr):
    """This program's rows (int64: row * V overflows int32 at B*T*V > 2^31), bounds and validity."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    in_range = rows < n_rows
    valid = in_range & (tl.load(valid_ptr + rows, mask=in_range, other=0) != 0)
    return rows, in_range, valid


# ---------------------------------------------------------------------------------------------------------
# Forward: online log-sum-exp over V in BLOCK_V chunks, fp32 throughout (bf16/fp16 are cast after loading):
#   m' = max(m, max_j x_j),  s' = s*exp(m - m') + sum_j exp(x_j - m'),  lse = m + log(s),  x = z / tau.
# Padded rows load nothing (their loads are masked off), so padding costs no bandwidth.
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _forward_kernel(
    logits_ptr, stride_b, stride_t, ids_ptr, valid_ptr, adv_ptr, old_ptr, ref_ptr, seq_weight_ptr, tok_w_ptr,
    lse_ptr, logp_ptr, ent_ptr, loss_ptr, coef_ptr, stats_ptr,
    n_rows, T, V, inv_temp, eps_low, eps_high, delta, beta,
    OBJECTIVE: tl.constexpr, HAS_OLD: tl.constexpr, HAS_KL: tl.constexpr, HAS_DELTA: tl.constexpr,
    CISPO: tl.constexpr, HAS_TOKW: tl.constexpr, ENTROPY: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows, in_range, valid = _rows(valid_ptr, n_rows, BLOCK_T)
    seq = rows // T
    row_offsets = seq * stride_b + (rows % T) * stride_t
    cols = tl.arange(0, BLOCK_V)
    run_max = tl.full([BLOCK_T], -float("inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_T], tl.float32)
    run_dev = tl.zeros([BLOCK_T], tl.float32)  # sum_j exp(x_j - m) (x_j - m), for the entropy
    for v0 in range(0, V, BLOCK_V):
        c = v0 + cols
        ld = valid[:, None] & (c[None, :] < V)
        x = tl.load(logits_ptr + row_offsets[:, None] + c[None, :], mask=ld, other=-float("inf"))
        x = x.to(tl.float32) * inv_temp
        new_max = tl.maximum(run_max, tl.max(x, axis=1))
        # Padded rows stay at -inf; shifting by 0 there avoids inf - inf = NaN.
        shift = tl.where(new_max == -float("inf"), 0.0, new_max)
        alpha = tl.exp(run_max - shift)
        e = tl.exp(x - shift[:, None])
        if ENTROPY:
            # Re-centre the old sum on the new max: sum e'(x - m') = alpha (sum e (x - m) + s (m - m')).
            moved = tl.where(run_max == -float("inf"), 0.0, run_max - shift)
            centred = tl.where(e > 0, x - shift[:, None], 0.0)  # 0 where e = 0: no 0 * inf
            run_dev = alpha * (run_dev + run_sum * moved) + tl.sum(e * centred, axis=1)
        run_sum = run_sum * alpha + tl.sum(e, axis=1)
        run_max = new_max
    ids = tl.load(ids_ptr + rows, mask=valid, other=0).to(tl.int64)
    target = tl.load(logits_ptr + row_offsets + ids, mask=valid, other=0.0).to(tl.float32) * inv_temp
    safe_sum = tl.where(valid, run_sum, 1.0)
    lse = tl.where(valid, run_max + tl.log(safe_sum), 0.0)
    logp = tl.where(valid, target - lse, 0.0)
    tl.store(lse_ptr + rows, lse, mask=in_range)
    tl.store(logp_ptr + rows, logp, mask=in_range)
    if ENTROPY:
        # H = lse - E[x] = log s - sum e (x - m) / s, both relative to the max: no cancellation against m.
        entropy = tl.where(valid, tl.log(safe_sum) - run_dev / safe_sum, 0.0)
        tl.store(ent_ptr + rows, entropy, mask=in_range)
    if OBJECTIVE:
        _evaluate_rows(logp, rows, in_range, valid, n_rows, T, adv_ptr, old_ptr, ref_ptr, lse_ptr, seq_weight_ptr,
                       tok_w_ptr, seq_weight_ptr, loss_ptr, coef_ptr, stats_ptr, eps_low, eps_high, delta, beta,
                       False, HAS_OLD, HAS_KL, HAS_DELTA, CISPO, HAS_TOKW)


# ---------------------------------------------------------------------------------------------------------
# Objective from precomputed log-probs, elementwise over [B, T] scalars. The ratio's log comes from
# seq_log_ratio[b] (sequence level: r_b = sum_t m_t (logp_t - old_t) / n_b) or from logp - old.
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _objective_kernel(
    logp_ptr, valid_ptr, adv_ptr, old_ptr, ref_ptr, seq_log_ratio_ptr, seq_weight_ptr, tok_w_ptr, seq_tok_w_ptr,
    loss_ptr, coef_ptr, stats_ptr,
    n_rows, T, eps_low, eps_high, delta, beta,
    SEQUENCE: tl.constexpr, HAS_OLD: tl.constexpr, HAS_KL: tl.constexpr, HAS_DELTA: tl.constexpr,
    CISPO: tl.constexpr, HAS_TOKW: tl.constexpr, BLOCK: tl.constexpr,
):
    rows, in_range, valid = _rows(valid_ptr, n_rows, BLOCK)
    logp = tl.load(logp_ptr + rows, mask=valid, other=0.0)
    _evaluate_rows(logp, rows, in_range, valid, n_rows, T, adv_ptr, old_ptr, ref_ptr, seq_log_ratio_ptr, seq_weight_ptr,
                   tok_w_ptr, seq_tok_w_ptr, loss_ptr, coef_ptr, stats_ptr, eps_low, eps_high, delta, beta,
                   SEQUENCE, HAS_OLD, HAS_KL, HAS_DELTA, CISPO, HAS_TOKW)


# ---------------------------------------------------------------------------------------------------------
# Backward: logp = z_y/tau - lse(z/tau)  =>  d logp / d z_j = (onehot_y(j) - p_j) / tau,  p = softmax(z/tau)
#   d z_j = G (onehot_y(j) - exp(z_j/tau - lse)) / tau,   G = coef_t * scale[b] (scale = g_b w_b).
# Rows with G = 0 (padding, clipped tokens when beta = 0) read nothing and write zeros.
# dlogits may alias logits (in-place): each element is read before it is written, by the same program.
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _backward_kernel(
    logits_ptr, stride_b, stride_t, dlogits_ptr, out_stride_b, out_stride_t,
    ids_ptr, lse_ptr, coef_ptr, scale_ptr, scale_stride, ecoef_ptr, ent_ptr, n_rows, T, V, inv_temp,
    HAS_ENTROPY: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    in_range = rows < n_rows
    seq = rows // T
    row_scale = tl.load(scale_ptr + seq * scale_stride, mask=in_range, other=0.0)
    grad = tl.load(coef_ptr + rows, mask=in_range, other=0.0) * row_scale
    active = in_range & (grad != 0.0)
    if HAS_ENTROPY:
        egrad = tl.load(ecoef_ptr + rows, mask=in_range, other=0.0) * row_scale
        active = in_range & ((grad != 0.0) | (egrad != 0.0))
        entropy = tl.load(ent_ptr + rows, mask=active, other=0.0)
        escale = egrad * inv_temp
    lse = tl.load(lse_ptr + rows, mask=active, other=0.0)
    ids = tl.load(ids_ptr + rows, mask=active, other=0).to(tl.int64)
    in_offsets = seq * stride_b + (rows % T) * stride_t
    out_offsets = seq * out_stride_b + (rows % T) * out_stride_t
    scale = grad * inv_temp
    cols = tl.arange(0, BLOCK_V)
    for v0 in range(0, V, BLOCK_V):
        c = v0 + cols
        in_v = c[None, :] < V
        x = tl.load(logits_ptr + in_offsets[:, None] + c[None, :], mask=active[:, None] & in_v, other=0.0)
        log_p = x.to(tl.float32) * inv_temp - lse[:, None]
        p = tl.exp(log_p)
        d = scale[:, None] * (tl.where(c[None, :] == ids[:, None], 1.0, 0.0) - p)
        if HAS_ENTROPY:
            d += escale[:, None] * p * tl.where(p > 0, log_p + entropy[:, None], 0.0)
        d = tl.where(active[:, None], d, 0.0)
        tl.store(dlogits_ptr + out_offsets[:, None] + c[None, :], d.to(dlogits_ptr.dtype.element_ty),
                 mask=in_range[:, None] & in_v)


# ---------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------

def _row_tiles(kernel: str, V: int, device: torch.device, tiles: dict | None = None) -> tuple[int, int, dict]:
    """(BLOCK_T, BLOCK_V, launch options) of ``kernel`` ("forward" or "backward").

    On a GPU one row per program, with the tuned configuration of this device (``tuning.tuned_config``) or
    ``tiles`` when given (a configuration of ``tuning.KERNELS["grpo_<kernel>"]``: the tuner and the tests).
    In the interpreter, without ``tiles``, wide tiles: its cost is per operation, not per element.
    """
    if tiles is None and device.type != "cuda":
        block_v = max(16, min(8192, triton.next_power_of_2(V)))
        return max(1, 32768 // block_v), block_v, {"num_warps": 4}
    if tiles is None:
        tiles = tuned_config(f"grpo_{kernel}", device, V=V)
    block_v = max(16, min(tiles["BLOCK_V"], triton.next_power_of_2(V)))
    return 1, block_v, {"num_warps": tiles["num_warps"], "num_stages": tiles["num_stages"]}


def _as_rows(logits: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``logits`` [B, T, V] with unit stride over V (copied only if not), its row strides and T."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return logits, logits.stride(0), logits.stride(1), logits.shape[1]


def _f32(x):
    return None if x is None else x.detach().to(torch.float32).reshape(-1).contiguous()


def flat_rows(token_ids, mask, advantages, old_logp, ref_logp):
    """Kernel inputs: int64 ids and uint8 validity ``[B*T]``, float32 advantages ``[B]``, old/ref ``[B*T]``."""
    mask = mask.reshape(-1)
    valid = mask.view(torch.uint8) if mask.dtype == torch.bool else (mask != 0).view(torch.uint8)
    return (token_ids.reshape(-1).to(torch.int64).contiguous(), valid.contiguous(), _f32(advantages),
            _f32(old_logp), _f32(ref_logp))


def flat_weights(token_weights):
    """``token_weights`` ``[B, T]`` as float32 ``[B*T]`` (None stays None)."""
    return _f32(token_weights)


def sequence_weights(valid: torch.Tensor, B: int, T: int, opts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence reduction weights ``w`` ``[B]`` and token counts ``[B]`` (float32).

    ``grpo``: ``1 / (B n_b)``; ``bnpo``, ``dapo``, ``cispo``: ``1 / N``; ``dr_grpo``: ``1 / (B max_len)``;
    ``reduction="none"``: 1.
    """
    counts = valid.view(B, T).sum(1, dtype=torch.float32)
    if opts.reduction == "none":
        return torch.ones_like(counts), counts
    if opts.loss_type == "grpo":
        return 1.0 / (B * counts.clamp(min=1)), counts
    if opts.loss_type in TOKEN_NORMALISED:
        return (1.0 / counts.sum().clamp(min=1)).expand(B).contiguous(), counts
    return torch.full_like(counts, 1.0 / (B * (opts.max_len if opts.max_len is not None else T))), counts


def _hyper(opts):
    """(eps_low, eps_high, delta, beta) as the kernels take them; cispo's cap rides in eps_high's slot."""
    eps_high = opts.cispo_eps_high if opts.loss_type == "cispo" else opts.eps_high
    return opts.eps_low, eps_high, float(opts.delta or 0.0), opts.beta


def entropy_terms(valid, tok_w, entropy, row_weight, opts):
    """The entropy bonus of rows: (loss term ``-c u_t H_t w_b`` ``[n]``, ecoef ``c u_t`` ``[n]``), with ``u``
    the token weights (None: 1), ``w`` per-row reduction weights; ``(None, None)`` when ``entropy_coef`` is 0."""
    if opts.entropy_coef == 0:
        return None, None
    ecoef = valid.to(torch.float32) * opts.entropy_coef
    if tok_w is not None:
        ecoef = ecoef * tok_w
    return -ecoef * entropy * row_weight, ecoef.contiguous()


def forward_rows(logits, ids, valid, *, temperature, objective=None, tiles=None, entropy=False):
    """Per-row ``lse`` and ``logp`` (and the entropy ``H`` with ``entropy=True``); with
    ``objective = (adv, old, ref, seq_weight, opts[, tok_w])`` (token-level importance) instead
    ``(lse, logp, loss, coef, stats[6, n_rows])``: the weighted loss (entropy bonus not included, see
    :func:`entropy_terms`), coef and the metric terms, ``stats[5]`` the entropy. All outputs float32.

    ``adv`` and ``seq_weight`` are indexed by sequence (``row // T``), ``old``/``ref``/``tok_w`` by row.
    ``tiles``: a ``grpo_forward`` configuration to launch with instead of the tuned one (see :func:`_row_tiles`).
    """
    logits, stride_b, stride_t, T = _as_rows(logits)
    n_rows, V = ids.numel(), logits.shape[-1]
    f32 = dict(dtype=torch.float32, device=logits.device)
    lse, logp = torch.empty(n_rows, **f32), torch.empty(n_rows, **f32)
    # Pointers that a constexpr flag leaves unread still need a tensor: lse stands in for them.
    adv = old = ref = seq_weight = loss = coef = stats = opts = ent = tok_w = lse
    if objective is not None:
        adv, old, ref, seq_weight, opts = objective[:5]
        tok_w = objective[5] if len(objective) > 5 else None
        loss, coef, stats = torch.empty(n_rows, **f32), torch.empty(n_rows, **f32), torch.empty(6, n_rows, **f32)
        ent, entropy = stats[5], True
    elif entropy:
        ent = torch.empty(n_rows, **f32)
    has_objective = objective is not None
    has_old, has_kl = has_objective and old is not None, has_objective and opts.beta > 0
    has_tokw = has_objective and tok_w is not None
    hyper = _hyper(opts) if has_objective else (0.0,) * 4
    block_t, block_v, launch = _row_tiles("forward", V, logits.device, tiles)
    if n_rows > 0:
        _forward_kernel[(triton.cdiv(n_rows, block_t),)](
            logits, stride_b, stride_t, ids, valid, adv, old if has_old else lse, ref if has_kl else lse, seq_weight,
            tok_w if has_tokw else lse, lse, logp, ent, loss, coef, stats, n_rows, T, V, 1.0 / temperature, *hyper,
            OBJECTIVE=has_objective, HAS_OLD=has_old, HAS_KL=has_kl,
            HAS_DELTA=has_objective and opts.delta is not None,
            CISPO=has_objective and opts.loss_type == "cispo", HAS_TOKW=has_tokw, ENTROPY=entropy,
            BLOCK_T=block_t, BLOCK_V=block_v, **launch,
        )
    if has_objective:
        return lse, logp, loss, coef, stats
    return (lse, logp, ent) if entropy else (lse, logp)


def objective_rows(logp, valid, adv, old, ref, seq_weight, B, T, opts, tok_w=None, entropy=None):
    """Objective from flat ``[B*T]`` log-probs: weighted loss (entropy bonus not included), coef, stats
    ``[6, B*T]`` (float32; ``stats[5]`` is ``entropy``, zeros when None)."""
    n_rows = logp.numel()
    f32 = dict(dtype=torch.float32, device=logp.device)
    loss, coef, stats = torch.empty(n_rows, **f32), torch.empty(n_rows, **f32), torch.empty(6, n_rows, **f32)
    sequence = opts.importance_level == "sequence"
    seq_log_ratio = seq_tok_w = logp
    if sequence:
        m = valid.view(B, T).bool()
        log_ratio = logp.view(B, T) - old.view(B, T) if old is not None else torch.zeros_like(logp.view(B, T))
        seq_log_ratio = torch.where(m, log_ratio, 0).sum(1) / m.sum(1).clamp(min=1)
        if tok_w is not None:
            seq_tok_w = torch.where(m, tok_w.view(B, T), 0).sum(1) / m.sum(1).clamp(min=1)
    block = 1024 if logp.is_cuda else 8192
    if n_rows > 0:
        _objective_kernel[(triton.cdiv(n_rows, block),)](
            logp, valid, adv, old if old is not None else logp, ref if opts.beta > 0 else logp,
            seq_log_ratio, seq_weight, tok_w if tok_w is not None else logp, seq_tok_w, loss, coef, stats,
            n_rows, T, *_hyper(opts),
            SEQUENCE=sequence, HAS_OLD=old is not None, HAS_KL=opts.beta > 0,
            HAS_DELTA=opts.delta is not None, CISPO=opts.loss_type == "cispo", HAS_TOKW=tok_w is not None,
            BLOCK=block,
        )
    if entropy is None:
        stats[5].zero_()
    else:
        stats[5] = torch.where(valid.bool(), entropy, 0)
    return loss, coef, stats


def backward_rows(logits, ids, lse, coef, scale, *, temperature, out=None, tiles=None, ecoef=None, entropy=None):
    """``d logits`` for ``dLoss/dlogp_t = coef_t * scale[t // T]`` (``scale`` of one element: every row), plus,
    with ``ecoef`` and ``entropy`` ``[n]``, an entropy term: ``dLoss/dH_t = -ecoef_t * scale[t // T]``.

    ``out`` receives the result (it may be ``logits`` itself, for an in-place backward); by default a
    new contiguous tensor of the logits' dtype. ``tiles``: a ``grpo_backward`` configuration to launch with
    instead of the tuned one (see :func:`_row_tiles`).
    """
    logits, stride_b, stride_t, T = _as_rows(logits)
    if out is None:
        out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    n_rows, V = ids.numel(), logits.shape[-1]
    block_t, block_v, launch = _row_tiles("backward", V, logits.device, tiles)
    has_entropy = ecoef is not None
    if n_rows > 0:
        _backward_kernel[(triton.cdiv(n_rows, block_t),)](
            logits, stride_b, stride_t, out, out.stride(0), out.stride(1),
            ids, lse, coef, scale, 0 if scale.numel() == 1 else 1, ecoef if has_entropy else lse,
            entropy if has_entropy else lse, n_rows, T, V, 1.0 / temperature,
            HAS_ENTROPY=has_entropy, BLOCK_T=block_t, BLOCK_V=block_v, **launch,
        )
    return out


def loss_objective(logits, ids, valid, adv, old, ref, seq_weight, B, T, opts, tok_w=None):
    """Kernel forward over the ``[B*T]`` rows of ``logits``: (lse, weighted loss with the entropy bonus, coef,
    stats[6, B*T], ecoef or None); ``stats[5]`` is the per-token entropy."""
    if opts.importance_level == "token":
        lse, _, loss, coef, stats = forward_rows(logits, ids, valid, temperature=opts.temperature,
                                                 objective=(adv, old, ref, seq_weight, opts, tok_w))
    else:
        lse, logp, entropy = forward_rows(logits, ids, valid, temperature=opts.temperature, entropy=True)
        loss, coef, stats = objective_rows(logp, valid, adv, old, ref, seq_weight, B, T, opts, tok_w, entropy)
    bonus, ecoef = entropy_terms(valid, tok_w, stats[5], seq_weight.repeat_interleave(T), opts)
    if bonus is not None:
        loss = loss + bonus
    return lse, loss, coef, stats, ecoef
