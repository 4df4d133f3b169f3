"""What a rollout samples from: one frozen settings type, validated once, read by both phases.

GRPO's config, ``gotr1 generate`` / ``gotr1 eval`` and the Python API all build a :class:`Sampling`; the
chain phase, the image phase and the GRPO loss (which recomputes log-probabilities at the same
temperature and guidance) read it. Defaults are GoT-R1's: plain multinomial sampling at temperature 1,
a 600-token chain cap, classifier-free guidance 5 (Janus-Pro).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gotr1.validation import require


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of both phases of a rollout."""

    max_chain_tokens: int = 600
    """Sampled chain tokens per row at most; a row that reaches the cap gets ``<begin_of_image>`` appended
    (outside the loss), as GoT-R1's inference does with its cap of 600."""
    temperature: float = 1.0
    """Temperature of chain and image tokens (GoT-R1: 1.0); log-probabilities are of the scaled distribution."""
    top_k: int | None = None
    """Top-k restriction of both phases (None: plain multinomial, as GoT-R1)."""
    top_p: float | None = None
    """Top-p restriction of both phases (None: plain multinomial, as GoT-R1)."""
    guidance: float = 5.0
    """Classifier-free guidance scale ``s`` of the image tokens, ``uncond + s (cond - uncond)`` (Janus-Pro: 5);
    1 disables CFG."""
    seed: int = 0
    """Noise key: row ``r`` at step ``t`` draws from ``(seed, r, t)``, so a rollout is reproducible for a fixed
    seed and batch layout."""

    def __post_init__(self):
        checks = {
            "max_chain_tokens": (self.max_chain_tokens >= 0, ">= 0"),
            "temperature": (self.temperature > 0, "> 0"),
            "top_k": (self.top_k is None or self.top_k >= 1, ">= 1 or None"),
            "top_p": (self.top_p is None or 0 < self.top_p <= 1, "in (0, 1] or None"),
            "guidance": (self.guidance >= 1, ">= 1"),
        }
        for name, (ok, expected) in checks.items():
            require(self, name, ok, expected)

    def with_seed(self, seed: int) -> Sampling:
        """The same settings with another noise key (GRPO draws a fresh one per step and rank)."""
        return dataclasses.replace(self, seed=seed)
