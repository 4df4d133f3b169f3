"""One decode step's sampling: classifier-free guidance, temperature, top-k / top-p, draw and log-prob, fused.

Janus-Pro mixes conditional and unconditional logits at each of the 576 image steps (``u + s * (c - u)``,
s = 5), scales by the temperature and samples; GRPO also needs the sampled token's log-prob. Eager code spends
four to six launches on this (and a full sort for top-p). :func:`sample` is one Triton launch with no host
synchronisation and no value-dependent allocation, so a whole decode step can be captured in a CUDA graph.

Semantics (shared by :func:`sample` and :func:`sample_reference`):

* guided logits ``g = u + s * (c - u)`` in fp32 (``g = c`` without uncond); a token that is -inf in either
  branch stays -inf; ``z = g * (1 / T)``.
* Tokens are ordered by (z descending, index ascending): ties go to the lower index, as in ``torch.argmax``
  and a stable descending sort. top-k keeps the first k tokens of that order; top-p keeps the shortest prefix
  whose probability reaches p (so always at least one token); with both, top-p applies to the renormalised
  top-k distribution. ``top_k >= V`` and ``top_p == 1`` restrict nothing; ``top_k == 1`` is greedy: exactly
  ``argmax(g)``, first index on ties.
* ``logp``: the chosen token's log-prob under the final, restricted and renormalised distribution
  (``logprob_of="mixed"``; 0 for greedy) or under ``log_softmax(c / T)`` (``"cond"``, the conditional branch
  alone, unrestricted), in float32.
* Rows need at least one finite logit. Top-p masses are summed in fp32 by the kernel and in fp64 by the
  reference, so a prefix whose mass lies within ~1e-6 (relative) of p may be cut differently.

Randomness is counter-based and keyed by (seed, row index, step): identical calls give identical ids, and a
row's sample never depends on the other rows or the batch size. The kernel and the reference draw from the
same distribution with different random streams (the kernel's stream also depends on its chunk size, so CUDA
and the interpreter differ).
"""

from __future__ import annotations

from numbers import Integral

import torch

from ._dispatch import use_triton

try:
    from ._sampling_kernels import launch_sample
except ImportError:  # pragma: no cover - no triton: use_triton() is then always False
    pass

__all__ = ["sample", "sample_reference"]

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MASK64 = (1 << 64) - 1


def _check(cond_logits, uncond_logits, guidance, temperature, top_k, top_p, seed, step, logprob_of):
    """Validate the arguments; return (top_k, top_p) with no-op restrictions turned into None."""
    if not isinstance(cond_logits, torch.Tensor) or cond_logits.dim() != 2:
        raise ValueError(f"cond_logits must be a 2-D tensor [B, V], got "
                         f"{tuple(cond_logits.shape) if isinstance(cond_logits, torch.Tensor) else type(cond_logits)}")
    if cond_logits.shape[1] == 0:
        raise ValueError(f"cond_logits must have a non-empty vocabulary, got shape {tuple(cond_logits.shape)}")
    for name, t in (("cond_logits", cond_logits), ("uncond_logits", uncond_logits)):
        if t is not None and t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
    if uncond_logits is not None:
        if uncond_logits.shape != cond_logits.shape:
            raise ValueError(f"uncond_logits shape {tuple(uncond_logits.shape)} must equal cond_logits shape "
                             f"{tuple(cond_logits.shape)}")
        if uncond_logits.device != cond_logits.device:
            raise ValueError(f"uncond_logits is on {uncond_logits.device}, cond_logits on {cond_logits.device}")
        if not guidance >= 1.0:
            raise ValueError(f"guidance must be >= 1 with uncond_logits, got {guidance}")
    elif guidance != 1.0:
        raise ValueError(f"guidance={guidance} needs uncond_logits (without them guidance must be 1.0)")
    if not (temperature > 0.0 and temperature != float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p}")
    if logprob_of not in ("mixed", "cond"):
        raise ValueError(f"logprob_of must be 'mixed' or 'cond', got {logprob_of!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if isinstance(step, torch.Tensor):
        if step.numel() != 1 or step.dtype.is_floating_point or step.dtype.is_complex or \
                step.device != cond_logits.device:
            raise ValueError(f"step as a tensor must hold one integer on {cond_logits.device}, got "
                             f"{step.dtype} {tuple(step.shape)} on {step.device}")
    elif isinstance(step, bool) or not isinstance(step, Integral) or not 0 <= step < 2**32:
        raise ValueError(f"step must be an int in [0, 2**32) or a one-element integer tensor, got {step!r}")
    vocab = cond_logits.shape[1]
    return (None if top_k is None or top_k >= vocab else top_k), (None if top_p in (None, 1.0) else top_p)


def sample(cond_logits, uncond_logits=None, *, guidance=1.0, temperature=1.0, top_k=None, top_p=None,
           seed, step, logprob_of="mixed"):
    """Sample one token per row from guided, tempered, optionally top-k / top-p restricted logits.

    One Triton launch on CUDA, no host synchronisation (CUDA-graph capturable); the interpreter on CPU with
    ``TRITON_INTERPRET=1``; :func:`sample_reference` otherwise. See the module docstring for the exact
    semantics (tie handling, -inf tokens, top-k then top-p).

    Parameters
    ----------
    cond_logits : torch.Tensor
        [B, V] float32 / bfloat16 / float16, conditional logits ``c``.
    uncond_logits : torch.Tensor, optional
        [B, V], unconditional logits ``u`` of the same rows (classifier-free guidance).
    guidance : float
        CFG scale ``s >= 1`` (needs uncond_logits); ``g = u + s * (c - u)``.
    temperature : float
        ``T > 0``; sampling uses ``g / T``. Tiny values (1e-4) stay finite and approach greedy.
    top_k : int, optional
        Keep the k most likely tokens (``>= 1``; 1 is greedy: exactly ``argmax(g)``, first index on ties).
    top_p : float, optional
        Keep the shortest most-likely prefix whose probability reaches p, ``0 < p <= 1``.
    seed : int
        In [0, 2**63); with ``step`` and the row index it keys the counter-based RNG.
    step : int or torch.Tensor
        Decode step in [0, 2**32), or a one-element integer tensor on the logits' device, read inside the
        kernel, so one captured CUDA graph can be replayed over the steps of a decode loop.
    logprob_of : {"mixed", "cond"}
        Log-prob of the chosen token under the final sampling distribution, or under ``log_softmax(c / T)``.

    Returns
    -------
    ids : torch.Tensor
        int64 [B], the sampled token ids.
    logp : torch.Tensor
        float32 [B], their log-probs.

    Raises
    ------
    ValueError
        Shape mismatch, guidance < 1 with uncond (or != 1 without), temperature <= 0, top_k < 1, top_p outside
        (0, 1], bad seed / step / logprob_of.
    TypeError
        Logits of another dtype.
    """
    top_k_eff, top_p_eff = _check(cond_logits, uncond_logits, guidance, temperature, top_k, top_p, seed, step,
                                  logprob_of)
    if not use_triton(cond_logits):
        return sample_reference(cond_logits, uncond_logits, guidance=guidance, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, step=step, logprob_of=logprob_of)
    return launch_sample(
        cond_logits.contiguous(), None if uncond_logits is None else uncond_logits.contiguous(),
        guidance=guidance, temperature=temperature, top_k=top_k_eff, top_p=top_p_eff, seed=seed,
        step=step.reshape(1) if isinstance(step, torch.Tensor) else step,
        cond_logprob=logprob_of == "cond")


def guided_logits_reference(cond_logits, uncond_logits=None, guidance=1.0):
    """fp32 ``u + s * (c - u)`` ([B, V]), -inf where either branch is -inf; plain ``c`` without uncond."""
    c = cond_logits.float()
    if uncond_logits is None:
        return c
    u = uncond_logits.float()
    masked = (c == float("-inf")) | (u == float("-inf"))
    return torch.where(masked, float("-inf"), u + guidance * (c - u))


def kept_mask_reference(z, top_k=None, top_p=None):
    """Boolean [B, V] kept set of top-k then top-p on logits z, by a stable descending sort (fp64 masses)."""
    if top_k is None and top_p is None:
        return torch.ones_like(z, dtype=torch.bool)  # no restriction: skip the sort (the CPU decode hot path)
    order = torch.sort(z, dim=-1, descending=True, stable=True).indices
    ranks = torch.arange(z.shape[-1], device=z.device).expand_as(z)
    keep_sorted = torch.ones_like(z, dtype=torch.bool)
    if top_k is not None:
        keep_sorted &= ranks < top_k
    if top_p is not None:
        z_sorted = z.gather(-1, order).double().masked_fill(~keep_sorted, float("-inf"))
        probs = torch.softmax(z_sorted, dim=-1)
        keep_sorted &= (torch.cumsum(probs, dim=-1) - probs) < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 with the same bits (torch int64 arithmetic wraps around)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _uniforms(seed, rows, step, vocab, device) -> torch.Tensor:
    """float64 ``[rows, vocab]`` in (0, 1): splitmix64 of (row seed, token), so row r's noise depends on
    (seed, r, step) only, never on the other rows, and one vectorised pass replaces a generator per row."""
    keys = torch.tensor([_signed(_row_seed(seed, r, step)) for r in range(rows)], dtype=torch.int64, device=device)
    tokens = torch.arange(vocab, dtype=torch.int64, device=device)
    x = keys[:, None] + tokens[None, :] * _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _signed(0x94D049BB133111EB)
    x = x ^ _shr(x, 31)
    return (_shr(x, 11).double() + 0.5) * 2.0**-53


def _row_seed(seed, row, step):
    """A 63-bit generator seed mixing (seed, row, step), so each row draws from its own stream."""
    mixed = (seed * 0x9E3779B97F4A7C15 + (row + 1) * 0xBF58476D1CE4E5B9 + (step + 1) * 0x94D049BB133111EB) & _MASK64
    mixed ^= mixed >> 31
    return mixed & ((1 << 63) - 1)


@torch.no_grad()
def sample_reference(cond_logits, uncond_logits=None, *, guidance=1.0, temperature=1.0, top_k=None,
                     top_p=None, seed, step, logprob_of="mixed"):
    """:func:`sample` in plain torch (a stable sort for top-k / top-p, then Gumbel-max with counter-based noise);
    same arguments, same distribution and log-probs, its own random stream. Not CUDA-graph capturable (it reads
    ``step``)."""
    top_k, top_p = _check(cond_logits, uncond_logits, guidance, temperature, top_k, top_p, seed, step,
                          logprob_of)
    step = int(step.item()) if isinstance(step, torch.Tensor) else step
    guided = guided_logits_reference(cond_logits, uncond_logits, guidance)
    z = guided * (1.0 / temperature)
    if top_k == 1:
        ids = guided.argmax(dim=-1)
        logp = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    else:
        logprobs = torch.log_softmax(z.masked_fill(~kept_mask_reference(z, top_k, top_p), float("-inf")), -1)
        # Gumbel-max: argmax(log p + G) is a draw from p; excluded tokens stay at -inf.
        gumbel = -torch.log(-torch.log(_uniforms(seed, z.shape[0], step, z.shape[1], z.device)))
        ids = (logprobs.double() + gumbel).argmax(dim=-1)
        logp = logprobs.gather(-1, ids[:, None])[:, 0]
    if logprob_of == "cond":
        cond_logprobs = torch.log_softmax(cond_logits.float() * (1.0 / temperature), dim=-1)
        logp = cond_logprobs.gather(-1, ids[:, None])[:, 0]
    return ids, logp
