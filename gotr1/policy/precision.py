"""The compute precision every pass of a trainer shares: rollout, log-prob passes and the loss.

GRPO's ratio ``exp(logp - old_logp)`` is 1 on-policy only if the rollout that sampled the tokens and the
update that re-scores them compute in the same precision. With a bf16 policy and LoRA that is not the default:
PEFT keeps the adapters in float32, so a pass outside autocast runs them in float32 and a pass inside it in
bf16, and the two log-probs of one token differ by bf16 rounding. So every pass a trainer makes runs inside
:func:`autocast` with the trainer's ``mixed_precision``, and whatever a pass computes outside torch's autocast
(the KV cache, the fused loss's head matmul) takes :func:`compute_dtype`.
"""

from __future__ import annotations

import torch

MIXED_PRECISION = ("auto", "bf16", "off")


def autocast(device_type: str, mixed_precision: str = "auto"):
    """The autocast context of a trainer's passes on ``device_type``.

    ``"auto"``: bf16 autocast on CUDA, none elsewhere (CPU runs stay float32, bit for bit as without autocast);
    ``"bf16"``: bf16 autocast on any device (how the CPU tests check the CUDA behaviour); ``"off"``: none.
    Autocast's weight-cast cache is off: a CUDA graph captured inside the context must not keep pointers to
    cached casts that are freed when the context exits.
    """
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=_enabled(device_type, mixed_precision),
                          cache_enabled=False)


def autocast_dtype(device_type: str, mixed_precision: str, default: torch.dtype) -> torch.dtype:
    """What :func:`autocast` computes matmuls in on ``device_type``: bf16 when it is enabled, else ``default``."""
    return torch.bfloat16 if _enabled(device_type, mixed_precision) else default


def _enabled(device_type: str, mixed_precision: str) -> bool:
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision: expected one of {MIXED_PRECISION}, got {mixed_precision!r}")
    return mixed_precision == "bf16" or (mixed_precision == "auto" and device_type == "cuda")


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast computes in on ``tensor``'s device when it is enabled there, else ``tensor``'s own."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype
