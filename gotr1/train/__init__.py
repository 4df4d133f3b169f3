"""Stage: training. The trainer shell both stages share (resume, loop, checkpoints, metrics), the SFT trainer
and its data (GoT JSONL rows, cached VQ image tokens), distributed helpers (see ``docs/architecture.md``)."""

from gotr1.train.config import SFTConfig, TrainingConfig
from gotr1.train.sft import SFTTrainer

__all__ = ["SFTConfig", "SFTTrainer", "TrainingConfig"]
