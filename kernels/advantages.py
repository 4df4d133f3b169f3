"""Group-relative advantages of GRPO: one Triton program normalises every group of a batch.

``A_i = (r_i - mean_g(r)) / (std(r) + eps)`` for the samples ``i`` of group ``g`` (the G consecutive
entries ``g*G .. g*G+G-1`` of ``rewards``), with ``std`` unbiased over the *valid* (non-NaN) rewards of the
group (``scale="group"``), of the whole batch (``scale="batch"``; the mean stays per group), or no division
(``scale="none"``). NaN rewards are left out of every statistic and get ``A = 0``; a group whose valid rewards
are all equal (this covers a group with a single valid reward, and an all-NaN group) gets ``A = 0``.
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton
from .tuning import KERNELS, tuned_config

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the reference still works without triton
    triton = None

SCALES = ("group", "batch", "none")

if triton is not None:

    @triton.jit
    def _load_groups(rewards_ptr, group0, n_groups, G, BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr):
        """A [BLOCK_GROUPS, BLOCK_G] tile of rewards (fp32) and its validity; padding reads as NaN."""
        groups = group0 + tl.arange(0, BLOCK_GROUPS)
        members = tl.arange(0, BLOCK_G)
        offsets = groups[:, None].to(tl.int64) * G + members[None, :]
        in_bounds = (groups[:, None] < n_groups) & (members[None, :] < G)
        rewards = tl.load(rewards_ptr + offsets, mask=in_bounds, other=float("nan")).to(tl.float32)
        return rewards, rewards == rewards, offsets, in_bounds

    # One program for the whole batch: GRPO batches hold at most a few thousand rewards, and the
    # batch-wide std of scale="batch" needs every group anyway. Two passes (mean, then squared
    # deviations) instead of one sum of squares keep the variance accurate when rewards share a large offset.
    @triton.jit
    def _group_advantages_kernel(
        rewards_ptr,
        out_ptr,
        n_groups,
        G,
        eps,
        SCALE: tl.constexpr,  # 0 = group, 1 = batch, 2 = none
        BLOCK_GROUPS: tl.constexpr,
        BLOCK_G: tl.constexpr,
    ):
        batch_std = 0.0
        if SCALE == 1:
            col_sum = tl.zeros([BLOCK_G], tl.float32)
            col_count = tl.zeros([BLOCK_G], tl.float32)
            for group0 in range(0, n_groups, BLOCK_GROUPS):
                r, valid, _, _ = _load_groups(rewards_ptr, group0, n_groups, G, BLOCK_GROUPS, BLOCK_G)
                col_sum += tl.sum(tl.where(valid, r, 0.0), axis=0)
                col_count += tl.sum(valid.to(tl.float32), axis=0)
            count = tl.sum(col_count, axis=0)
            batch_mean = tl.sum(col_sum, axis=0) / tl.maximum(count, 1.0)
            col_sq = tl.zeros([BLOCK_G], tl.float32)
            for group0 in range(0, n_groups, BLOCK_GROUPS):
                r, valid, _, _ = _load_groups(rewards_ptr, group0, n_groups, G, BLOCK_GROUPS, BLOCK_G)
                dev = tl.where(valid, r - batch_mean, 0.0)
                col_sq += tl.sum(dev * dev, axis=0)
            batch_std = tl.sqrt(tl.sum(col_sq, axis=0) / tl.maximum(count - 1.0, 1.0))

        for group0 in range(0, n_groups, BLOCK_GROUPS):
            r, valid, offsets, in_bounds = _load_groups(rewards_ptr, group0, n_groups, G, BLOCK_GROUPS, BLOCK_G)
            n_valid = tl.sum(valid.to(tl.float32), axis=1)
            # "All valid rewards equal" is tested on max == min, not std == 0: the rounded mean can
            # leave deviations of a few ulps that a tiny eps would blow up.
            r_max = tl.max(tl.where(valid, r, -float("inf")), axis=1)
            r_min = tl.min(tl.where(valid, r, float("inf")), axis=1)
            informative = (n_valid >= 2.0) & (r_max > r_min)
            # Centre on the group's max before averaging: r - r_max is (nearly) exact, so rewards sharing a
            # large offset do not lose their differences to the rounding of a big sum.
            shifted = tl.where(valid, r - tl.where(informative, r_max, 0.0)[:, None], 0.0)
            dev = tl.where(valid, shifted - (tl.sum(shifted, axis=1) / tl.maximum(n_valid, 1.0))[:, None], 0.0)
            # Degenerate groups divide by 1 (their result is replaced by 0): no 0/0 when eps = 0.
            if SCALE == 0:
                std = tl.sqrt(tl.sum(dev * dev, axis=1) / tl.maximum(n_valid - 1.0, 1.0))
                adv = dev / tl.where(informative, std + eps, 1.0)[:, None]
            elif SCALE == 1:
                adv = dev / tl.where(informative, batch_std + eps, 1.0)[:, None]
            else:
                adv = dev
            adv = tl.where(valid & informative[:, None], adv, 0.0)
            tl.store(out_ptr + offsets, adv, mask=in_bounds)


def _check(rewards: torch.Tensor, group_size: int, scale: str, eps: float) -> None:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1 or not rewards.is_floating_point():
        got = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        dtype = getattr(rewards, "dtype", None)
        raise ValueError(f"rewards must be a 1-D floating tensor [B*G]; got shape {got}, dtype {dtype}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int; got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide the number of rewards {rewards.numel()} "
            f"(rewards shape {tuple(rewards.shape)})"
        )
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps!r}")


def group_advantages_reference(rewards: torch.Tensor, group_size: int, scale: str = "group",
                               eps: float = 1e-4) -> torch.Tensor:
    """Plain-torch :func:`group_advantages`, computed in the rewards' dtype (float64 in the tests)."""
    _check(rewards, group_size, scale, eps)
    r = rewards.reshape(-1, group_size)
    valid = ~torch.isnan(r)
    n_valid = valid.sum(1, keepdim=True)
    mean = torch.where(valid, r, 0).sum(1, keepdim=True) / n_valid.clamp(min=1)
    dev = torch.where(valid, r - mean, 0)
    if scale == "group":
        adv = dev / ((dev * dev).sum(1, keepdim=True) / (n_valid - 1).clamp(min=1)).sqrt().add(eps)
    elif scale == "batch":
        kept = rewards[~torch.isnan(rewards)]
        batch_std = kept.std() if kept.numel() >= 2 else rewards.new_zeros(())
        adv = dev / (batch_std + eps)
    else:
        adv = dev
    r_max = torch.where(valid, r, -torch.inf).amax(1, keepdim=True)
    r_min = torch.where(valid, r, torch.inf).amin(1, keepdim=True)
    informative = (n_valid >= 2) & (r_max > r_min)
    return torch.where(valid & informative, adv, 0).reshape(-1).to(torch.promote_types(rewards.dtype, torch.float32))


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4, *,
                     config: dict | None = None) -> torch.Tensor:
    """Group-relative advantages ``(r - mean_g) / (std + eps)`` of GRPO.

    Parameters
    ----------
    rewards : torch.Tensor
        ``[B*G]`` floating rewards; the G samples of prompt ``i`` are ``rewards[i*G:(i+1)*G]``. NaN marks a
        reward that could not be computed: it is excluded from the statistics and gets advantage 0.
    group_size : int
        G, the number of samples per prompt; must divide ``rewards.numel()``.
    scale : {"group", "batch", "none"}
        Divide by the unbiased std of the group's valid rewards, of all valid rewards of the batch, or not at all.
        The mean is always the group's.
    eps : float
        Added to the std, >= 0.
    config : dict, optional
        An ``advantages`` launch configuration (``gotr1.kernels.tuning``) instead of this GPU's tuned one.

    Returns
    -------
    torch.Tensor
        ``[B*G]`` advantages, float32 (float64 for float64 rewards, which always take the torch path). Groups
        whose valid rewards are all equal (including groups with fewer than two valid rewards) get exactly 0.
    """
    _check(rewards, group_size, scale, eps)
    if not use_triton(rewards) or rewards.dtype == torch.float64:
        return group_advantages_reference(rewards, group_size, scale, eps)
    rewards = rewards.contiguous()
    out = torch.empty(rewards.shape, dtype=torch.float32, device=rewards.device)
    n_groups = rewards.numel() // group_size
    if n_groups == 0:
        return out
    if config is None:
        config = (tuned_config("advantages", rewards.device, n=rewards.numel(), G=group_size) if rewards.is_cuda
                  else KERNELS["advantages"].default)
    block_g = max(triton.next_power_of_2(group_size), 2)
    block_groups = max(min(triton.next_power_of_2(n_groups), max(config["BLOCK_ELEMS"] // block_g, 1)), 1)
    _group_advantages_kernel[(1,)](
        rewards, out, n_groups, group_size, float(eps),
        SCALE=SCALES.index(scale), BLOCK_GROUPS=block_groups, BLOCK_G=block_g, num_warps=config["num_warps"],
    )
    return out
