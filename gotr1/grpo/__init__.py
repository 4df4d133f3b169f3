"""Stage 2: GRPO. The trainer (rollout -> rewards -> advantages -> update), the fused-loss update step and
the sample grids it writes (see ``docs/architecture.md``)."""

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer"]
