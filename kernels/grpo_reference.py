"""The GRPO policy loss in plain torch, and what the Triton paths share with it.

Shared pieces: :class:`LossOptions` (validated hyper-parameters), :func:`check_inputs` (shape and value
checks whose errors name the argument), :func:`reduce_token_loss` (the ``loss_type`` normalisations) and
:func:`finish_metrics`. :func:`grpo_loss_reference` is the semantics the kernels must reproduce; it
materialises ``[B, T, V]`` log-softmax and is what runs where Triton does not.

Per valid token ``t`` of sequence ``b`` (``m_bt = 1``), with ``logp = log_softmax(z / temperature)[y]``:

* ``rho = exp(logp - old_logp)`` (``importance_level="token"``) or ``rho_b = exp(sum_t m (logp - old) / n_b)``
  (``"sequence"``); ``old_logp=None`` means ``old = logp`` detached, i.e. ``rho = 1`` with gradient.
* ``pg = -min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A)``; with ``delta``: for ``A < 0``, ``pg = min(pg, -delta*A)``.
* ``loss_type="cispo"`` (MiniMax-M1, TRL's ``cispo``) replaces ``pg`` by ``-sg(min(rho, cispo_eps_high)) * A * logp``:
  the importance weight capped from above only (no lower bound; as in TRL the cap is ``cispo_eps_high``
  itself, default 5.0, not ``1 + eps``), a stop-gradient coefficient on the log-probability. ``eps_low`` and
  ``eps_high`` are unused; ``delta`` is rejected. With ``"sequence"`` the weight is the capped sequence ratio.
* ``kl = exp(ref - logp) - (ref - logp) - 1`` (k3), used when ``beta > 0``.
* ``H = -sum_j p_j log p_j`` of ``p = softmax(z / temperature)``, the token's entropy (reported as ``entropy_mean``).
* per-token loss ``l = w * (pg + beta*kl - entropy_coef*H)`` with ``w = token_weights`` (1 when None);
  masked tokens contribute 0. Token weights scale a token's loss and gradient only: token counts, the
  reduction's normalisation and the metrics stay those of ``mask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
IMPORTANCE_LEVELS = ("token", "sequence")
REDUCTIONS = ("mean", "none")
METRIC_NAMES = ("ratio_mean", "clip_low_frac", "clip_high_frac", "dual_clip_frac", "kl_mean", "entropy_mean")
TOKEN_NORMALISED = ("bnpo", "dapo", "cispo")  # "mean" = sum / active tokens of the call


@dataclass(frozen=True)
class LossOptions:
    """Hyper-parameters of the GRPO loss (see :func:`gotr1.kernels.grpo_loss.grpo_loss`), validated."""

    temperature: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    delta: float | None = None
    beta: float = 0.04
    loss_type: str = "grpo"
    max_len: int | None = None
    importance_level: str = "token"
    reduction: str = "mean"
    cispo_eps_high: float = 5.0
    entropy_coef: float = 0.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature!r}")
        for name in ("eps_low", "eps_high", "beta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)!r}")
        if self.delta is not None and not self.delta > 1:
            raise ValueError(f"delta (dual-clip bound) must be > 1 or None; got {self.delta!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}; got {self.loss_type!r}")
        if self.importance_level not in IMPORTANCE_LEVELS:
            raise ValueError(f"importance_level must be one of {IMPORTANCE_LEVELS}; got {self.importance_level!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {self.reduction!r}")
        if not self.cispo_eps_high > 0:
            raise ValueError(f"cispo_eps_high must be > 0; got {self.cispo_eps_high!r}")
        if self.loss_type == "cispo" and self.delta is not None:
            raise ValueError(f"delta (dual clip) does not apply to loss_type='cispo'; got delta={self.delta!r}")
        if not abs(self.entropy_coef) < float("inf"):
            raise ValueError(f"entropy_coef must be a finite float; got {self.entropy_coef!r}")
        max_len = self.max_len
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None; got {self.max_len!r}")


def _shape(x) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def check_inputs(B: int, T: int, device: torch.device, token_ids, mask, advantages, old_logp, ref_logp,
                 beta: float, token_weights=None) -> None:
    """Raise ``ValueError`` naming the argument when a per-token or per-sequence input does not fit ``[B, T]``.

    ``logits``/``hidden`` themselves are checked by the caller, which derives ``B``, ``T`` and ``device``.
    """
    expected = {"token_ids": [B, T], "mask": [B, T], "advantages": [B], "old_logp": [B, T], "ref_logp": [B, T]}
    expected["token_weights"] = [B, T]
    given = {"token_ids": token_ids, "mask": mask, "advantages": advantages, "old_logp": old_logp,
             "ref_logp": ref_logp, "token_weights": token_weights}
    for name, x in given.items():
        if x is None and name in ("old_logp", "ref_logp", "token_weights"):
            continue
        if not isinstance(x, torch.Tensor) or list(x.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} (B={B}, T={T}); got {_shape(x)}")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, but the logits are on {device}")
    if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
        raise ValueError(f"token_ids must be an integer tensor; got dtype {token_ids.dtype}")
    for name in ("advantages", "old_logp", "ref_logp", "token_weights"):
        x = given[name]
        if x is not None and not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor; got dtype {x.dtype}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"ref_logp is required when beta > 0 (beta={beta}); "
                         "pass beta=0 to train without a reference model")


def check_logits(logits) -> None:
    """``logits`` must be a floating ``[B, T, V]`` tensor with ``V >= 1``."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point() or logits.shape[-1] < 1:
        dtype = getattr(logits, "dtype", None)
        raise ValueError(f"logits must be a floating [B, T, V] tensor; got shape {_shape(logits)}, dtype {dtype}")


def reduce_token_loss(token_loss: torch.Tensor, token_counts: torch.Tensor, opts: LossOptions) -> torch.Tensor:
    """Normalise masked per-token losses ``[B, T]`` (0 at masked tokens) into the loss ``loss_type`` asks for.

    ``grpo``: mean over sequences of per-sequence token means; ``bnpo``, ``dapo`` and ``cispo``: sum / total
    tokens of this call (TRL's ``dapo``/``cispo`` divide by the active tokens of the whole batch: a trainer
    gets that with ``reduction="none"``); ``dr_grpo``: sum / (B * max_len), ``max_len`` defaulting to T.
    ``reduction="none"`` returns the per-sequence sums ``[B]`` instead, for callers that combine several calls
    into one normalisation.
    """
    seq_sums = token_loss.sum(1)
    if opts.reduction == "none":
        return seq_sums
    if opts.loss_type == "grpo":
        return (seq_sums / token_counts.clamp(min=1)).mean()
    if opts.loss_type in TOKEN_NORMALISED:
        return seq_sums.sum() / token_counts.sum().clamp(min=1)
    max_len = opts.max_len if opts.max_len is not None else token_loss.shape[1]
    return seq_sums.sum() / (token_loss.shape[0] * max_len)


def finish_metrics(sums: torch.Tensor, token_counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn masked sums ``[6]`` (ratio, low clips, high clips, dual clips, KL, entropy) into token means.

    Returns float32 scalars named by :data:`METRIC_NAMES`, ``num_tokens`` (scalar) and ``token_counts`` ``[B]``.
    """
    sums = sums.detach().float()
    num_tokens = token_counts.sum()
    means = sums / num_tokens.clamp(min=1)
    metrics = {name: means[i] for i, name in enumerate(METRIC_NAMES)}
    metrics["num_tokens"] = num_tokens
    metrics["token_counts"] = token_counts
    return metrics


def selective_logprobs_reference(logits: torch.Tensor, token_ids: torch.Tensor,
                                 temperature: float = 1.0, with_entropy: bool = False):
    """``log_softmax(logits / temperature)[token_ids]`` ``[B, T]``, in float32 (float64 for float64 logits);
    with ``with_entropy`` the pair ``(logp, entropy)``, ``entropy = -sum_j p_j log p_j`` per token."""
    compute = torch.promote_types(logits.dtype, torch.float32)
    V = logits.shape[-1]
    ids = token_ids.long().clamp(0, V - 1)  # padded positions may hold any id; their value is never used
    log_p = torch.log_softmax(logits.to(compute) / temperature, dim=-1)
    logp = log_p.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp
    return logp, entropy_from_log_softmax(log_p)


def entropy_from_log_softmax(log_p: torch.Tensor) -> torch.Tensor:
    """``-sum_j p_j log p_j`` over the last dim (0 * log 0 taken as 0), differentiable."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, 0).sum(-1)


def grpo_loss_reference(
    logits, token_ids, mask, advantages, old_logp=None, ref_logp=None, *,
    temperature=1.0, eps_low=0.2, eps_high=0.2, delta=None, beta=0.04, loss_type="grpo",
    max_len=None, importance_level="token", reduction="mean", token_weights=None, cispo_eps_high=5.0,
    entropy_coef=0.0,
):
    """Plain-torch GRPO loss, the semantics of :func:`gotr1.kernels.grpo_loss.grpo_loss` (same signature).

    Computes in float32, or float64 for float64 logits. ``advantages``, ``old_logp``, ``ref_logp`` and
    ``token_weights`` are constants (no gradient flows into them). Memory is several ``[B, T, V]`` float tensors.
    """
    opts = LossOptions(temperature, eps_low, eps_high, delta, beta, loss_type, max_len, importance_level, reduction,
                       cispo_eps_high, entropy_coef)
    check_logits(logits)
    B, T, _ = logits.shape
    check_inputs(B, T, logits.device, token_ids, mask, advantages, old_logp, ref_logp, beta, token_weights)
    logp, entropy = selective_logprobs_reference(logits, token_ids, temperature, with_entropy=True)
    token_loss, sums, counts = token_objective_reference(logp, mask, advantages, old_logp, ref_logp, opts,
                                                         token_weights=token_weights, entropy=entropy)
    return reduce_token_loss(token_loss, counts, opts), finish_metrics(sums, counts)


def token_objective_reference(logp, mask, advantages, old_logp, ref_logp, opts: LossOptions, *,
                              token_weights=None, entropy=None):
    """Masked per-token losses ``[B, T]`` (differentiable in ``logp`` and ``entropy``), metric sums ``[6]``,
    token counts ``[B]``. ``entropy`` ``[B, T]`` (None: zeros) feeds ``entropy_coef`` and ``entropy_mean``."""
    m = mask.bool()
    counts = m.sum(1).to(torch.float32)
    logp = torch.where(m, logp, 0)
    dtype = logp.dtype
    adv = advantages.detach().to(dtype)[:, None]
    if old_logp is None:
        log_ratio = logp - logp.detach()  # ratio 1, gradient d ratio / d logp = 1
    else:
        log_ratio = torch.where(m, logp - old_logp.detach().to(dtype), 0)
    if opts.importance_level == "sequence":
        seq = log_ratio.sum(1, keepdim=True) / counts.clamp(min=1).to(dtype)[:, None]
        log_ratio = seq.expand_as(logp)
    ratio = torch.exp(log_ratio)
    dual = torch.zeros_like(m)
    if opts.loss_type == "cispo":
        pg = -ratio.detach().clamp(max=opts.cispo_eps_high) * adv * logp
    else:
        pg = -torch.minimum(ratio * adv, ratio.clamp(1 - opts.eps_low, 1 + opts.eps_high) * adv)
    if opts.delta is not None:
        cap = -opts.delta * adv
        dual = (adv < 0) & (pg > cap)
        pg = torch.where(adv < 0, torch.minimum(pg, cap), pg)
    kl = torch.zeros_like(logp)
    if opts.beta > 0:
        x = torch.where(m, ref_logp.detach().to(dtype) - logp, 0)
        kl = torch.exp(x) - x - 1
    if entropy is None:
        entropy = torch.zeros_like(logp)
    entropy = torch.where(m, entropy.to(dtype), 0)
    weights = 1 if token_weights is None else token_weights.detach().to(dtype)
    token_loss = torch.where(m, weights * (pg + opts.beta * kl - opts.entropy_coef * entropy), 0)
    r = ratio.detach()
    if opts.loss_type == "cispo":  # TRL's cispo_clip_ratio: weight capped where it pushes up (A > 0)
        low = torch.zeros_like(m)
        high = (r > opts.cispo_eps_high) & (adv > 0)
    else:
        low = (r < 1 - opts.eps_low) & (adv < 0)
        high = (r > 1 + opts.eps_high) & (adv > 0)
    terms = (r, low, high, dual, kl.detach(), entropy.detach())
    sums = torch.stack([torch.where(m, t.to(dtype), 0).sum() for t in terms])
    return token_loss, sums, counts
