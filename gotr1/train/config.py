"""Training configurations: the settings every gotr1 trainer shares, and those of stage 1 (SFT).

A config holds what the trainer reads and nothing else: the policy and prompts it trains on are its
constructor's arguments, and what only the command line needs (which model to load, which judge to
build) lives in :mod:`gotr1.cli.jobs`. Each field is documented once, right under it; fields map one to
one onto the YAML files and command-line options of ``gotr1 sft`` / ``gotr1 grpo``. Defaults follow the
paper where it gives them (LoRA rank 32 / alpha 32) and common Janus fine-tuning practice elsewhere.
``__post_init__`` rejects bad values with the field's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from gotr1.policy.precision import MIXED_PRECISION
from gotr1.validation import require


@dataclass
class TrainingConfig:
    """Settings shared by the SFT and GRPO trainers: the policy, its optimisation and its outputs."""

    # --- policy ------------------------------------------------------------------------------
    use_lora: bool = False
    """Train LoRA adapters (and the GoT tag rows) instead of every weight of the language model."""
    lora_rank: int = 32
    """LoRA rank ``r`` (GoT-R1: 32)."""
    lora_alpha: float = 32.0
    """LoRA scaling ``alpha`` (GoT-R1: 32)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Language-model projections that get adapters."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    mixed_precision: str = "auto"
    """Autocast of the trainer's forwards: ``auto`` (bf16 on CUDA, none on the CPU), ``bf16`` (any device) or
    ``off``. GRPO's rollout, log-prob passes and loss all run in it, so their log-probs of a token agree."""

    # --- optimisation ------------------------------------------------------------------------
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warm-up steps before the cosine decay."""
    max_steps: int = 100
    """Optimizer steps to run."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    seed: int = 0
    """Seeds the data order and the CFG dropout draws."""

    # --- output ------------------------------------------------------------------------------
    output_dir: str = "runs/gotr1"
    """Checkpoints (``step-NNNNNNN``) and ``metrics.jsonl``."""
    save_every: int = 50
    """Write a checkpoint every this many steps (and at the end)."""
    keep_last: int | None = 2
    """Checkpoints to keep (None: all)."""
    log_every: int = 1
    """Write a ``metrics.jsonl`` line every this many steps."""
    resume_from: str | None = None
    """A checkpoint folder, or a run folder holding ``latest``, to continue from exactly."""
    overwrite: bool = False
    """Start afresh in an ``output_dir`` that holds an earlier run, moving its contents aside into
    ``<output_dir>.overwritten-<time>`` (never deleted). Without it such a folder is refused."""
    trust_unverified: bool = False
    """Resume a checkpoint that has no ``checksums.json`` (made by hand); gotr1's own always have one, so one
    without is otherwise refused as incomplete or altered."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        self.lora_target_modules = tuple(self.lora_target_modules)
        self.adam_betas = tuple(self.adam_betas)
        for name in ("lora_rank", "max_steps", "save_every", "log_every"):
            require(self, name, getattr(self, name) >= 1, ">= 1")
        for name in ("lr", "lora_alpha"):
            require(self, name, getattr(self, name) > 0, "> 0")
        for name in ("warmup_steps", "weight_decay"):
            require(self, name, getattr(self, name) >= 0, ">= 0")
        require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)")
        require(self, "max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0 or None")
        require(self, "keep_last", self.keep_last is None or self.keep_last >= 1, ">= 1 or None")
        require(self, "adam_betas", len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "two values in [0, 1)")
        require(self, "lora_target_modules", len(self.lora_target_modules) > 0, "a non-empty list of projection names")
        require(self, "mixed_precision", self.mixed_precision in MIXED_PRECISION, f"one of {MIXED_PRECISION}")


@dataclass
class SFTConfig(TrainingConfig):
    """Stage 1: supervised fine-tuning on GoT data (chain tokens and image tokens)."""

    # --- data --------------------------------------------------------------------------------
    data: str = ""
    """GoT JSONL data: a file, a folder of ``*.jsonl`` shards (``gotr1 data convert`` writes them) or a glob;
    ``{"prompt", "chain", "image"}`` rows, image paths relative to their file. Rows are read from disk as drawn."""
    skip_invalid: bool = False
    """Skip (and count) bad rows instead of stopping at the first one."""
    image_cache_dir: str | None = None
    """Where VQ image tokens are cached; default ``<output_dir>/image_tokens``."""
    max_chain_tokens: int = 600
    """Longest chain (in tokens, ``<begin_of_image>`` included) a row may have; longer rows are an error."""
    cfg_dropout: float = 0.1
    """Probability that a row becomes an unconditional row (caption replaced by padding) for CFG."""

    # --- loss --------------------------------------------------------------------------------
    chain_loss_weight: float = 1.0
    """Weight of the chain-token cross-entropy (text head)."""
    image_loss_weight: float = 1.0
    """Weight of the image-token cross-entropy (generation head)."""

    batch_size: int = 8
    """Rows per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    output_dir: str = "runs/sft"
    """Checkpoints (``step-NNNNNNN``), ``metrics.jsonl`` and the image-token cache."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_chain_tokens", "batch_size", "grad_accum"):
            require(self, name, getattr(self, name) >= 1, ">= 1")
        for name in ("chain_loss_weight", "image_loss_weight"):
            require(self, name, getattr(self, name) >= 0, ">= 0")
        require(self, "cfg_dropout", 0 <= self.cfg_dropout < 1, "in [0, 1)")
        if self.chain_loss_weight == 0 and self.image_loss_weight == 0:
            raise ValueError("SFTConfig: chain_loss_weight and image_loss_weight are both 0; set one of them > 0")
