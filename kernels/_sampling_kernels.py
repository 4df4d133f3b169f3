"""Triton kernel of :func:`gotr1.kernels.sampling.sample` and its launcher (private; the API is ``sampling.py``).

One launch per call. Each program owns ``ROWS`` rows (1 on CUDA; many under the interpreter, where fewer,
larger programs run faster) and walks the vocabulary in ``BLOCK``-wide chunks, in fp32 throughout:

    g = u + s * (c - u)          (g = c without uncond; -inf in either branch stays -inf)
    z = g * (1 / T)
    kept set K = {z > v} + the first r tokens (by index) with z == v; sample j ~ softmax(z restricted to K)

Order the tokens by (z descending, index ascending). top-k keeps the first k of that order, top-p the shortest
prefix whose probability reaches p; both sets have the (v, r) form above, and top-k then top-p applies top-p to
the renormalised top-k distribution.

Passes over the row (later ones hit L2):

* no top-k / top-p: ONE pass: online max / sum-exp, and a weighted reservoir choice of one chunk (chunk b
  replaces the choice with probability w_b / W_so_far, so it ends chosen with probability w_b / W); then
  the chosen chunk alone is reloaded and sampled by inverse CDF.
* greedy (top_k = 1): ONE pass, first-index argmax of g (temperature cannot change it).
* top-k or top-p: a statistics pass (max, min, count, std of the finite z), then per restriction a threshold
  search: one pass evaluates PIVOTS thresholds t at once (mass or count of {z >= t}), a second compacts the
  tokens of the bracketing interval into ``scratch``; further levels repeat this over the shrinking candidates
  in scratch only, until the bracket holds one distinct value v. Then one final pass runs the reservoir over
  the kept set (its total mass is the normaliser of the log-prob). 4 passes over the row (6 with both), plus
  the candidate levels: on Gaussian-like logits (V = 102400) level 0 keeps ~25% of the row for top-p 0.9 and
  ~0.1% for top-k 50, and each further level ~1/8 of what is left (5-7 levels), about 0.6 row of extra reads.
  The pivots of level 0 are spread over [max - 6 std, max] (top-p: at most 32 nats, where the remaining
  mass e^-32 * V is below fp32's resolution of p); later levels spread them over the candidates' range.

Randomness: Philox keyed by ``seed`` with counters (chunk index, row, step, 0); lane 0 drives the reservoir,
lane 1 the inverse CDF inside the chosen chunk. A row's sample thus depends on its own logits, seed, step and
row index only, never on other rows or the batch size.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import tuned_config

_NEG_BIG = tl.constexpr(-3.0e38)  # finite start for running maxima: exp(old - new) never meets inf - inf
_INF = tl.constexpr(float("inf"))
PIVOTS = 8  # thresholds evaluated per search pass: each pass shrinks the bracket about PIVOTS + 1 times
MAX_LEVELS = 64  # guard against non-terminating searches on NaN rows; real rows need far fewer


@triton.jit
def _load_chunk(cond_ptr, uncond_ptr, row_ok, row_off, V, guidance, inv_t, cols, HAS_UNCOND: tl.constexpr):
    """(z, g, c, in-range mask) at columns cols ([1 or ROWS, BLOCK]), fp32, out-of-range entries -inf.
    ``u + s*(c-u)`` would give nan or +inf where a branch is -inf, so such tokens stay masked."""
    mask = row_ok[:, None] & (cols < V)
    offs = row_off[:, None] + cols
    c = tl.load(cond_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    g = c
    if HAS_UNCOND:
        u = tl.load(uncond_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        masked = (c == float("-inf")) | (u == float("-inf"))
        u = tl.where(masked, 0.0, u)
        g = tl.where(masked, float("-inf"), u + guidance * (tl.where(masked, 0.0, c) - u))
    return g * inv_t, g, c, mask


@triton.jit
def _uniform(seed, rows, step, counter, LANE: tl.constexpr):
    """One uniform float in [0, 1) per row from Philox(seed; counter, row, step, 0), lane LANE (0 or 1)."""
    zero = rows * 0
    r0, r1, _, _ = tl.philox(seed, (zero + counter).to(tl.uint32), rows.to(tl.uint32),
                             (zero + step).to(tl.uint32), zero.to(tl.uint32))
    bits = r0
    if LANE == 1:
        bits = r1
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _lse_update(run_max, run_sum, x):
    """Fold chunk x [ROWS, BLOCK] into an online (max, sum exp(x - max)); also return the chunk's sum."""
    new_max = tl.maximum(run_max, tl.max(x, axis=1))
    chunk = tl.sum(tl.exp(x - new_max[:, None]), axis=1)
    return new_max, run_sum * tl.exp(run_max - new_max) + chunk, chunk


@triton.jit
def _kept(z, v, r, ties_before):
    """Membership of {z > v} + the first r tokens with z == v, and the count of z == v in this chunk."""
    tie = z == v[:, None]
    tie_i = tie.to(tl.int32)
    rank = ties_before[:, None] + tl.cumsum(tie_i, axis=1) - tie_i
    return (z > v[:, None]) | (tie & (rank < r[:, None])), tl.sum(tie_i, axis=1)


@triton.jit
def _first_pass(cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, seed, step,
                HAS_UNCOND: tl.constexpr, GREEDY: tl.constexpr, SEARCH: tl.constexpr,
                COND_LOGP: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """The pass every call makes. Returns, per row: max z and sum exp(z - max) (the sum only without a
    search), the reservoir's chunk, the greedy argmax, min / count / std of the finite z (search only), and
    the log-sum-exp of c / T (COND_LOGP)."""
    z_max = tl.full([ROWS], _NEG_BIG, tl.float32)
    z_sum = tl.zeros([ROWS], tl.float32)
    c_max = tl.full([ROWS], _NEG_BIG, tl.float32)
    c_sum = tl.zeros([ROWS], tl.float32)
    best = tl.full([ROWS], float("-inf"), tl.float32)
    best_idx = tl.zeros([ROWS], tl.int32)
    chosen = tl.zeros([ROWS], tl.int32)
    z_min = tl.full([ROWS], _INF, tl.float32)
    count = tl.zeros([ROWS], tl.float32)
    mean = tl.zeros([ROWS], tl.float32)
    m2 = tl.zeros([ROWS], tl.float32)
    for start in range(0, V, BLOCK):
        z, g, c, _ = _load_chunk(cond_ptr, uncond_ptr, row_ok, row_off, V, guidance, inv_t,
                                 start + tl.arange(0, BLOCK)[None, :], HAS_UNCOND)
        if GREEDY:
            chunk_max = tl.max(g, axis=1)
            better = chunk_max > best  # strict: an earlier chunk keeps ties, like torch.argmax
            best_idx = tl.where(better, start + tl.argmax(g, axis=1), best_idx)
            best = tl.where(better, chunk_max, best)
        elif SEARCH:
            z_max = tl.maximum(z_max, tl.max(z, axis=1))
            finite = z > float("-inf")
            z_min = tl.minimum(z_min, tl.min(tl.where(finite, z, _INF), axis=1))
            # Chan et al.'s merge of (count, mean, M2), stable for logits of any offset; clamping keeps
            # finfo.min-style masks from overflowing the squares (they only widen the first pivots)
            n_b = tl.sum(finite.to(tl.float32), axis=1)
            z_c = tl.where(finite, tl.minimum(tl.maximum(z, -1e15), 1e15), 0.0)
            mean_b = tl.sum(z_c, axis=1) / tl.maximum(n_b, 1.0)
            dev = tl.where(finite, z_c - mean_b[:, None], 0.0)
            n_ab = tl.maximum(count + n_b, 1.0)
            delta = mean_b - mean
            mean = mean + delta * (n_b / n_ab)
            m2 = m2 + tl.sum(dev * dev, axis=1) + delta * delta * (count * n_b / n_ab)
            count = count + n_b
        else:
            z_max, z_sum, chunk = _lse_update(z_max, z_sum, z)
            take = _uniform(seed, rows, step, start // BLOCK, 0) * z_sum < chunk
            chosen = tl.where(take, start // BLOCK, chosen)
        if COND_LOGP:
            c_max, c_sum, _ = _lse_update(c_max, c_sum, c * inv_t)
    std = tl.sqrt(m2 / tl.maximum(count - 1.0, 1.0))
    std = tl.where(std == std, std, _INF)  # a nan row must not poison the pivots
    return z_max, z_sum, chosen, best_idx, z_min, count.to(tl.int32), std, c_max, c_sum


@triton.jit
def _pivots(lo, hi, PIVOTS: tl.constexpr):
    """PIVOTS thresholds evenly spaced in (lo, hi], the last exactly hi, all within [lo, hi]."""
    finite = (lo < hi) & (lo > -_INF) & (hi < _INF)  # rows outside the batch or already done may not be
    lo = tl.where(finite, lo, 0.0)
    hi = tl.where(finite, hi, 0.0)
    frac = (tl.arange(0, PIVOTS) + 1).to(tl.float32) * (1.0 / PIVOTS)
    t = lo[:, None] * (1.0 - frac[None, :]) + hi[:, None] * frac[None, :]  # no overflow for |lo|, |hi| huge
    t = tl.minimum(tl.maximum(t, lo[:, None]), hi[:, None])
    return tl.where(tl.arange(0, PIVOTS)[None, :] == PIVOTS - 1, hi[:, None], t)


@triton.jit
def _pivot_sums(z, w, pivots):
    """Sum of w over {z >= t} for every pivot t: [ROWS, PIVOTS]."""
    ge = z[:, None, :] >= pivots[:, :, None]
    return tl.sum(tl.where(ge, w[:, None, :], 0.0), axis=2)


@triton.jit
def _bracket(sums, pivots, target, c_lo, hi, base, PIVOTS: tl.constexpr):
    """New bracket [lo, hi) of the threshold and the weight at or above hi.

    A threshold t is feasible when S(t) >= target; S falls with t, so the feasible pivots are a prefix. v lies
    between the last feasible pivot (or the candidates' minimum, feasible by construction) and the first
    infeasible one (or the old hi). Pivots at or below c_lo count as feasible: S there is S(c_lo)."""
    idx = tl.arange(0, PIVOTS)[None, :]
    feasible = (sums >= target[:, None]) | (pivots <= c_lo[:, None])
    h = tl.sum(feasible.to(tl.int32), axis=1)
    new_lo = tl.where(h == 0, c_lo, tl.sum(tl.where(idx == h[:, None] - 1, pivots, 0.0), axis=1))
    new_hi = tl.where(h == PIVOTS, hi, tl.sum(tl.where(idx == h[:, None], pivots, 0.0), axis=1))
    new_base = tl.where(h == PIVOTS, base, tl.sum(tl.where(idx == h[:, None], sums, 0.0), axis=1))
    return new_lo, new_hi, new_base


@triton.jit
def _compact(scratch_ptr, row_off, z, keep, n, c_lo, c_hi):
    """Append the kept z of a chunk to each row's candidates in scratch, in index order; track count, min, max.

    In-place compaction is safe: an element moves to a position at or before its own, whose old value was
    read by this chunk (or an earlier one) before the prefix sum that placed it."""
    k = keep.to(tl.int32)
    pos = n[:, None] + tl.cumsum(k, axis=1) - k
    tl.store(scratch_ptr + row_off[:, None] + pos, z, mask=keep)
    c_lo = tl.minimum(c_lo, tl.min(tl.where(keep, z, _INF), axis=1))
    c_hi = tl.maximum(c_hi, tl.max(tl.where(keep, z, -_INF), axis=1))
    return n + tl.sum(k, axis=1), c_lo, c_hi


@triton.jit
def _load_candidates(scratch_ptr, row_off, cols, n, done):
    """Candidates at cols [1, BLOCK] of the rows still searching (-inf elsewhere) and their mask.
    ``.cg`` reads L2, where the other threads' compaction stores landed."""
    mask = (~done)[:, None] & (cols < n[:, None])
    z = tl.load(scratch_ptr + row_off[:, None] + cols, mask=mask, other=float("-inf"), cache_modifier=".cg")
    return z, mask


@triton.jit
def _first_level(cond_ptr, uncond_ptr, scratch_ptr, row_ok, row_off, V, guidance, inv_t, z_max, c_lo, n, spread,
                 limit, v_lo, r_lo, MASS: tl.constexpr, HAS_UNCOND: tl.constexpr, ROWS: tl.constexpr,
                 BLOCK: tl.constexpr, PIVOTS: tl.constexpr):
    """Level 0 of :func:`_search`, over the logits: the target, the first bracket and its compacted candidates.
    Returns (target, hi, base, n, c_lo, c_hi)."""
    active = row_ok & (c_lo < z_max)
    piv = _pivots(tl.maximum(c_lo, z_max - spread), z_max, PIVOTS)
    sums = tl.zeros([ROWS, PIVOTS], tl.float32)
    total = tl.zeros([ROWS], tl.float32)
    for start in range(0, V, BLOCK):
        # every row, not only `active` ones: top-p needs the total of each
        z, _, _, _ = _load_chunk(cond_ptr, uncond_ptr, row_ok, row_off, V, guidance, inv_t,
                                 start + tl.arange(0, BLOCK)[None, :], HAS_UNCOND)
        if MASS:
            w = tl.exp(z - z_max[:, None])
            total += tl.sum(tl.where(z > v_lo[:, None], w, 0.0), axis=1)
        else:
            w = (z > float("-inf")).to(tl.float32)
        sums += _pivot_sums(z, w, piv)
    if MASS:
        # v_lo <= z_max on real rows; the clamp only keeps rows outside the batch finite
        target = limit * (total + r_lo.to(tl.float32) * tl.exp(tl.minimum(v_lo - z_max, 0.0)))
    else:
        target = tl.minimum(n.to(tl.float32), limit * 1.0)
    hi = tl.full([ROWS], _INF, tl.float32)
    base = tl.zeros([ROWS], tl.float32)
    lo, hi, base = _bracket(sums, piv, target, c_lo, hi, base, PIVOTS)
    n_new = tl.zeros([ROWS], tl.int32)
    new_lo = tl.full([ROWS], _INF, tl.float32)
    new_hi = tl.full([ROWS], -_INF, tl.float32)
    ties = tl.zeros([ROWS], tl.int32)
    for start in range(0, V, BLOCK):
        z, _, _, mask = _load_chunk(cond_ptr, uncond_ptr, active, row_off, V, guidance, inv_t,
                                    start + tl.arange(0, BLOCK)[None, :], HAS_UNCOND)
        admissible, n_ties = _kept(z, v_lo, r_lo, ties)
        ties += n_ties
        keep = admissible & mask & (z >= lo[:, None]) & (z < hi[:, None])
        n_new, new_lo, new_hi = _compact(scratch_ptr, row_off, z, keep, n_new, new_lo, new_hi)
    tl.debug_barrier()  # the next level's loads read what other threads stored
    n = tl.where(active, n_new, n)  # an inactive row's admissible tokens all equal c_lo already
    c_hi = tl.where(active, new_hi, c_lo)
    c_lo = tl.where(active, new_lo, c_lo)
    return target, hi, tl.where(active, base, 0.0), n, c_lo, c_hi


@triton.jit
def _search(cond_ptr, uncond_ptr, scratch_ptr, row_ok, row_off, V, guidance, inv_t, z_max, c_lo, n, spread,
            limit, v_lo, r_lo, MASS: tl.constexpr, HAS_UNCOND: tl.constexpr, ROWS: tl.constexpr,
            BLOCK: tl.constexpr, PIVOTS: tl.constexpr, MAX_LEVELS: tl.constexpr):
    """(v, r) of top-k (MASS False, limit = k: weights 1) or top-p (MASS True, limit = p: weights exp(z - max))
    among the admissible tokens {z > v_lo} + first r_lo ties at v_lo; c_lo / n: their min and count.

    Invariant: v is among the candidates, the tokens in [c_lo, c_hi] of the bracket, and S(c_lo) >= target >
    S(hi) = base, where S(t) sums the weights of the admissible tokens with z >= t. Level 0 reads the logits;
    later levels read the candidates compacted into scratch."""
    target, hi, base, n, c_lo, c_hi = _first_level(
        cond_ptr, uncond_ptr, scratch_ptr, row_ok, row_off, V, guidance, inv_t, z_max, c_lo, n, spread, limit,
        v_lo, r_lo, MASS, HAS_UNCOND, ROWS, BLOCK, PIVOTS)
    done = (~row_ok) | (c_lo == c_hi)
    level = 0
    while (tl.sum((~done).to(tl.int32)) > 0) & (level < MAX_LEVELS):
        piv = _pivots(c_lo, c_hi, PIVOTS)
        sums = tl.zeros([ROWS, PIVOTS], tl.float32) + base[:, None]
        n_max = tl.max(tl.where(done, 0, n))
        for start in range(0, n_max, BLOCK):
            z, mask = _load_candidates(scratch_ptr, row_off, start + tl.arange(0, BLOCK)[None, :], n, done)
            if MASS:
                w = tl.exp(z - z_max[:, None])
            else:
                w = mask.to(tl.float32)
            sums += _pivot_sums(z, w, piv)
        lo, new_hi_bound, new_base = _bracket(sums, piv, target, c_lo, hi, base, PIVOTS)
        hi = tl.where(done, hi, new_hi_bound)
        base = tl.where(done, base, new_base)
        n_new = tl.zeros([ROWS], tl.int32)
        new_lo = tl.full([ROWS], _INF, tl.float32)
        new_hi = tl.full([ROWS], -_INF, tl.float32)
        for start in range(0, n_max, BLOCK):
            z, mask = _load_candidates(scratch_ptr, row_off, start + tl.arange(0, BLOCK)[None, :], n, done)
            keep = mask & (z >= lo[:, None]) & (z < hi[:, None])
            n_new, new_lo, new_hi = _compact(scratch_ptr, row_off, z, keep, n_new, new_lo, new_hi)
        tl.debug_barrier()
        n = tl.where(done, n, n_new)
        c_lo = tl.where(done, c_lo, new_lo)
        c_hi = tl.where(done, c_hi, new_hi)
        done = done | (c_lo == c_hi)
        level += 1
    # S(> v) = base; keep the fewest ties at v that reach the target
    if MASS:
        r = tl.ceil((target - base) / tl.exp(c_lo - z_max))
    else:
        r = target - base
    r = tl.where(r > 1.0, r, 1.0)
    r = tl.where(r < n.to(tl.float32), r, n.to(tl.float32))
    return c_lo, r.to(tl.int32)


@triton.jit
def _reservoir_kept(cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, z_max, v, r, seed, step,
                    HAS_UNCOND: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Final pass of a restricted row: total kept mass and the reservoir's chunk (with its ties-before count)."""
    total = tl.zeros([ROWS], tl.float32)
    chosen = tl.zeros([ROWS], tl.int32)
    chosen_ties = tl.zeros([ROWS], tl.int32)
    ties = tl.zeros([ROWS], tl.int32)
    for start in range(0, V, BLOCK):
        z, _, _, _ = _load_chunk(cond_ptr, uncond_ptr, row_ok, row_off, V, guidance, inv_t,
                                 start + tl.arange(0, BLOCK)[None, :], HAS_UNCOND)
        kept, n_ties = _kept(z, v, r, ties)
        chunk = tl.sum(tl.where(kept, tl.exp(z - z_max[:, None]), 0.0), axis=1)
        total += chunk
        take = _uniform(seed, rows, step, start // BLOCK, 0) * total < chunk
        chosen = tl.where(take, start // BLOCK, chosen)
        chosen_ties = tl.where(take, ties, chosen_ties)
        ties += n_ties
    return total, chosen, chosen_ties


@triton.jit
def _pick_in_chunk(cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, z_max, v, r, chunk_idx,
                   ties_before, seed, step, HAS_UNCOND: tl.constexpr, BLOCK: tl.constexpr):
    """Inverse-CDF draw inside each row's chosen chunk: (token id, its z, its cond logit c)."""
    lane = tl.arange(0, BLOCK)[None, :]
    z, _, c, _ = _load_chunk(cond_ptr, uncond_ptr, row_ok, row_off, V, guidance, inv_t,
                             chunk_idx[:, None] * BLOCK + lane, HAS_UNCOND)
    kept, _ = _kept(z, v, r, ties_before)
    w = tl.where(kept, tl.exp(z - z_max[:, None]), 0.0)
    cdf = tl.cumsum(w, axis=1)
    target = _uniform(seed, rows, step, chunk_idx, 1) * tl.max(cdf, axis=1)
    idx = tl.sum((cdf <= target[:, None]).to(tl.int32), axis=1)
    # rounding can push the target to the total: fall back to the last token with weight
    idx = tl.maximum(tl.minimum(idx, tl.max(tl.where(w > 0.0, lane, -1), axis=1)), 0)
    hit = lane == idx[:, None]
    return (chunk_idx * BLOCK + idx).to(tl.int64), tl.sum(tl.where(hit, z, 0.0), axis=1), \
        tl.sum(tl.where(hit, c, 0.0), axis=1)


@triton.jit(do_not_specialize=["top_k", "seed", "step"])
def _sample_kernel(cond_ptr, uncond_ptr, scratch_ptr, step_ptr, ids_ptr, logp_ptr,
                   B, V, guidance, inv_t, top_k, top_p, seed, step,
                   HAS_UNCOND: tl.constexpr, GREEDY: tl.constexpr, TOP_K: tl.constexpr, TOP_P: tl.constexpr,
                   COND_LOGP: tl.constexpr, STEP_FROM_PTR: tl.constexpr, ROWS: tl.constexpr,
                   BLOCK: tl.constexpr, PIVOTS: tl.constexpr, MAX_LEVELS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < B
    row_off = rows.to(tl.int64) * V
    if STEP_FROM_PTR:
        step = tl.load(step_ptr)  # a device counter: a captured CUDA graph replays with its current value
    z_max, z_sum, chosen, best_idx, z_min, n_finite, std, c_max, c_sum = _first_pass(
        cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, seed, step,
        HAS_UNCOND, GREEDY, TOP_K or TOP_P, COND_LOGP, ROWS, BLOCK)
    if GREEDY:
        ids = best_idx.to(tl.int64)
        logp = tl.zeros([ROWS], tl.float32)  # the restricted distribution is a point mass
        c_chosen = tl.load(cond_ptr + row_off + ids, mask=row_ok, other=0.0).to(tl.float32)
    else:
        v = tl.full([ROWS], float("-inf"), tl.float32)  # (v, r) = (-inf, 0): every finite token
        r = tl.zeros([ROWS], tl.int32)
        ties_before = tl.zeros([ROWS], tl.int32)
        if TOP_K:
            v, r = _search(cond_ptr, uncond_ptr, scratch_ptr, row_ok, row_off, V, guidance, inv_t, z_max,
                           z_min, n_finite, std * 6.0, top_k, v, r,
                           False, HAS_UNCOND, ROWS, BLOCK, PIVOTS, MAX_LEVELS)
        if TOP_P:
            c_lo = z_min
            n_adm = n_finite
            if TOP_K:
                c_lo = v
                n_adm = r
            v, r = _search(cond_ptr, uncond_ptr, scratch_ptr, row_ok, row_off, V, guidance, inv_t, z_max,
                           c_lo, n_adm, tl.minimum(std * 6.0, 32.0), top_p, v, r,
                           True, HAS_UNCOND, ROWS, BLOCK, PIVOTS, MAX_LEVELS)
        if TOP_K or TOP_P:
            z_sum, chosen, ties_before = _reservoir_kept(
                cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, z_max, v, r, seed, step,
                HAS_UNCOND, ROWS, BLOCK)
        ids, z_chosen, c_chosen = _pick_in_chunk(
            cond_ptr, uncond_ptr, rows, row_ok, row_off, V, guidance, inv_t, z_max, v, r, chosen,
            ties_before, seed, step, HAS_UNCOND, BLOCK)
        logp = z_chosen - z_max - tl.log(tl.where(row_ok, z_sum, 1.0))
    if COND_LOGP:
        logp = c_chosen * inv_t - c_max - tl.log(tl.where(row_ok, c_sum, 1.0))
    tl.store(ids_ptr + rows, ids, mask=row_ok)
    tl.store(logp_ptr + rows, logp, mask=row_ok)


def _launch_config(batch: int, vocab: int, device: torch.device, config: dict | None = None) -> tuple[int, int, int]:
    """(ROWS, BLOCK, num_warps). BLOCK depends on the vocabulary only and is never tuned: the noise is keyed by
    the chunk index, so another BLOCK would draw other samples. On CUDA, ROWS and num_warps come from ``config``
    (a ``sample`` configuration of ``tuning.KERNELS``) or the device's tuned one; num_warps is capped at
    BLOCK / 256 (16 warps x 8 bf16 per thread: 16-byte loads; <= 99 registers, no spills on sm_90). Under the
    interpreter, without ``config``, as many rows per program as keep a chunk near 16K elements, since its
    cost is per operation, not per element."""
    block = min(triton.next_power_of_2(vocab), 4096)
    if config is None and device.type != "cuda":
        return min(triton.next_power_of_2(batch), max(1, 16384 // block)), block, 4
    if config is None:
        config = tuned_config("sample", device, B=batch, V=vocab)
    return config["ROWS"], block, max(1, min(config["num_warps"], block // 256))


def launch_sample(cond: torch.Tensor, uncond: torch.Tensor | None, *, guidance: float, temperature: float,
                  top_k: int | None, top_p: float | None, seed: int, step: int | torch.Tensor,
                  cond_logprob: bool, config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on validated inputs: ``cond`` / ``uncond`` [B, V] contiguous; top_k None, 1 (greedy) or
    in [2, V); top_p None or in (0, 1); ``step`` an int or a one-element integer tensor on cond's device.
    ``config``: a ``sample`` configuration to launch with instead of the tuned one (the tuner, the tests).

    Returns
    -------
    ids : torch.Tensor
        int64 [B].
    logp : torch.Tensor
        float32 [B].
    """
    batch, vocab = cond.shape
    ids = torch.empty(batch, dtype=torch.int64, device=cond.device)
    logp = torch.empty(batch, dtype=torch.float32, device=cond.device)
    if batch == 0:
        return ids, logp
    greedy = top_k == 1
    search = not greedy and (top_k is not None or top_p is not None)
    # a value-independent allocation: fine inside CUDA-graph capture (it comes from the graph's pool)
    scratch = torch.empty((batch, vocab), dtype=torch.float32, device=cond.device) if search else logp
    step_from_ptr = isinstance(step, torch.Tensor)
    rows, block, num_warps = _launch_config(batch, vocab, cond.device, config)
    _sample_kernel[(triton.cdiv(batch, rows),)](
        cond, cond if uncond is None else uncond, scratch, step if step_from_ptr else ids, ids, logp,
        batch, vocab, float(guidance), 1.0 / float(temperature), int(top_k or 0), float(top_p or 1.0),
        int(seed), 0 if step_from_ptr else int(step),
        HAS_UNCOND=uncond is not None, GREEDY=greedy, TOP_K=search and top_k is not None,
        TOP_P=search and top_p is not None, COND_LOGP=cond_logprob, STEP_FROM_PTR=step_from_ptr,
        ROWS=rows, BLOCK=block, PIVOTS=PIVOTS, MAX_LEVELS=MAX_LEVELS,
        num_warps=num_warps, enable_fp_fusion=False,  # no FMA: g matches torch's u + s * (c - u) bit for bit
    )
    return ids, logp
