"""Training configurations: the settings every gotr1 trainer shares, and those of stage 1 (SFT).

Each field is documented once, right under it; fields map one to one onto the YAML files and
command-line options of ``gotr1 sft`` / ``gotr1 grpo``. Defaults follow the paper where it gives them
(LoRA rank 32 / alpha 32) and common Janus fine-tuning practice elsewhere. ``__post_init__`` rejects bad
values with the field's name.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass
class TrainingConfig:
    """Settings shared by the SFT and GRPO trainers: the policy, its optimisation and its outputs."""

    # --- model -------------------------------------------------------------------------------
    model: str = "tiny"
    """Policy to fine-tune: a Janus-Pro checkpoint (hub id or local folder) or ``"tiny"`` (random weights)."""
    dtype: str | None = None
    """Weight dtype (``"bfloat16"``, ``"float32"``); default the checkpoint's."""
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
    progress: bool = True
    """Show a tqdm progress bar."""

    def _check(self, name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"{type(self).__name__}.{name} must be {expected}, got {getattr(self, name)!r}")

    def __post_init__(self):
        self.lora_target_modules = tuple(self.lora_target_modules)
        self.adam_betas = tuple(self.adam_betas)
        for name in ("lora_rank", "max_steps", "save_every", "log_every"):
            self._check(name, getattr(self, name) >= 1, ">= 1")
        for name in ("lr", "lora_alpha"):
            self._check(name, getattr(self, name) > 0, "> 0")
        for name in ("warmup_steps", "weight_decay"):
            self._check(name, getattr(self, name) >= 0, ">= 0")
        self._check("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)")
        self._check("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0 or None")
        self._check("keep_last", self.keep_last is None or self.keep_last >= 1, ">= 1 or None")
        self._check("adam_betas", len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "two values in [0, 1)")
        self._check("lora_target_modules", len(self.lora_target_modules) > 0, "a non-empty list of projection names")


@dataclass
class SFTConfig(TrainingConfig):
    """Stage 1: supervised fine-tuning on GoT data (chain tokens and image tokens)."""

    # --- data --------------------------------------------------------------------------------
    data: str = ""
    """GoT JSONL file (``{"prompt", "chain", "image"}`` rows, image paths relative to the file)."""
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
            self._check(name, getattr(self, name) >= 1, ">= 1")
        for name in ("chain_loss_weight", "image_loss_weight"):
            self._check(name, getattr(self, name) >= 0, ">= 0")
        self._check("cfg_dropout", 0 <= self.cfg_dropout < 1, "in [0, 1)")
        if self.chain_loss_weight == 0 and self.image_loss_weight == 0:
            raise ValueError("SFTConfig: chain_loss_weight and image_loss_weight are both 0; set one of them > 0")


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class GRPOConfig(TrainingConfig):
    """Stage 2: GRPO with dual-stage rewards. Defaults are the paper's (Sec. 4.1) and DESIGN.md's conventions."""

    # --- rollout -----------------------------------------------------------------------------
    prompts_per_step: int = 8
    """Prompts (groups) per step (GoT-R1: 8)."""
    group_size: int = 16
    """Samples per prompt, ``G`` (GoT-R1: 16)."""
    max_chain_tokens: int = 600
    """Cap on chain tokens; ``<begin_of_image>`` is appended at the cap (GoT-R1's reference: 600)."""
    temperature: float = 1.0
    """Sampling temperature of chain and image tokens (GoT-R1: 1.0); log-probs are taken at it too."""
    guidance: float = 5.0
    """Classifier-free guidance scale of the image tokens (Janus-Pro: 5)."""
    top_k: int | None = None
    """Top-k restriction of both stages (None: plain multinomial, as GoT-R1)."""
    top_p: float | None = None
    """Top-p restriction of both stages (None: plain multinomial, as GoT-R1)."""
    cuda_graph: bool = False
    """Capture the image decode step in a CUDA graph (CUDA only)."""

    # --- loss --------------------------------------------------------------------------------
    beta: float = 0.04
    """KL weight (k3 estimator) to the reference policy; 0 runs no reference forward at all."""
    eps_low: float = 0.2
    """Lower clip of the ratio: ``1 - eps_low``."""
    eps_high: float = 0.2
    """Upper clip of the ratio: ``1 + eps_high``."""
    delta: float | None = None
    """Dual clip (> 1) for negative advantages; None disables it."""
    loss_type: str = "grpo"
    """``grpo`` (mean of per-sequence token means), ``bnpo`` (token mean), ``dr_grpo`` (sum / (B * max_len))."""
    importance_level: str = "token"
    """``token`` ratios, or one ``sequence`` ratio from the masked mean log-ratio."""
    scale_rewards: str = "group"
    """Advantage scaling: by the group's std, the batch's std, or ``none``."""
    num_iterations: int = 1
    """Updates per rollout; with 1 the rollout's own log-probs are the old policy's."""
    cfg_in_loss: bool = False
    """Score image tokens under the CFG-mixed distribution instead of the conditional branch."""
    micro_batch_size: int = 8
    """Sequences per forward/backward of the update (only one micro-batch of logits exists at once)."""
    chain_loss: bool = True
    """Include the chain tokens in the loss (GoT-R1 covers the whole output)."""
    image_loss: bool = True
    """Include the image tokens in the loss."""

    # --- prompts and rewards ------------------------------------------------------------------
    prompts: str = "color,shape,texture,spatial,non_spatial,complex"
    """Training prompts: a text file (one prompt a line) or T2I-CompBench categories joined by commas."""
    reward: str = "judge"
    """``judge`` (GoT-R1's four MLLM rewards) or ``rules`` (offline layout and colour rule rewards)."""
    reward_mode: str = "product"
    """How reward components combine: ``product`` (GoT-R1) or ``sum`` (the paper's weaker ablation)."""
    judge: str = "openai"
    """Judge backend: ``openai`` (an OpenAI-compatible server, e.g. vLLM), a Qwen2.5-VL path or hub id run
    in process, or ``tiny`` (random weights, for tests)."""
    judge_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the OpenAI-compatible judge server."""
    judge_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Model name the judge server serves."""
    judge_concurrency: int = 32
    """Judge requests in flight at once (OpenAI backend)."""
    judge_timeout: float = 120.0
    """Seconds before a judge request is retried, then scored 0 (OpenAI backend)."""

    # --- distributed -------------------------------------------------------------------------
    fsdp: bool = False
    """Under ``torchrun``: shard weights, gradients and AdamW state across ranks with FSDP2 (``fully_shard``),
    gathering weights only for the rollout and layer by layer for the update; what full fine-tuning of
    Janus-Pro-7B needs. False: every rank holds the whole model (enough for LoRA). A run resumes with the
    same setting it was saved with (its optimizer file differs)."""

    # --- reliability and logging -------------------------------------------------------------
    max_bad_steps: int = 5
    """Abort after this many consecutive steps skipped for a non-finite loss or gradient."""
    judge_outage_rate: float = 0.5
    """A step whose share of failed or unparsable judge requests exceeds this counts as a judge outage."""
    max_judge_outage_steps: int = 3
    """Abort after this many consecutive judge-outage steps (0: never); the judge is also asked one check
    question before the first step."""
    sample_every: int = 50
    """Write a sample grid PNG (prompt, chain, layout, image) every this many steps (0: never)."""
    tensorboard: bool = False
    """Also log scalars to TensorBoard under ``<output_dir>/tb`` (needs the tensorboard package)."""

    # --- overridden defaults -------------------------------------------------------------------
    use_lora: bool = True
    """GoT-R1 trains LoRA adapters (rank 32, alpha 32)."""
    lr: float = 1e-5
    """GoT-R1: 1e-5 with cosine decay."""
    warmup_steps: int = 0
    """Linear warm-up steps before the cosine decay."""
    max_steps: int = 1000
    """GoT-R1: 1000 steps."""
    output_dir: str = "runs/grpo"
    """Checkpoints (``step-NNNNNNN``), ``metrics.jsonl`` and sample grids."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("prompts_per_step", "max_chain_tokens", "num_iterations", "micro_batch_size", "max_bad_steps"):
            self._check(name, getattr(self, name) >= 1, ">= 1")
        self._check("group_size", self.group_size >= 2, ">= 2 (advantages compare samples of one prompt)")
        self._check("temperature", self.temperature > 0, "> 0")
        self._check("guidance", self.guidance >= 1, ">= 1")
        self._check("top_k", self.top_k is None or self.top_k >= 1, ">= 1 or None")
        self._check("top_p", self.top_p is None or 0 < self.top_p <= 1, "in (0, 1] or None")
        for name in ("beta", "eps_low", "eps_high", "sample_every"):
            self._check(name, getattr(self, name) >= 0, ">= 0")
        self._check("delta", self.delta is None or self.delta > 1, "> 1 or None")
        self._check("loss_type", self.loss_type in LOSS_TYPES, f"one of {LOSS_TYPES}")
        self._check("importance_level", self.importance_level in ("token", "sequence"), "'token' or 'sequence'")
        self._check("scale_rewards", self.scale_rewards in SCALE_REWARDS, f"one of {SCALE_REWARDS}")
        self._check("reward_mode", self.reward_mode in ("product", "sum"), "'product' or 'sum'")
        self._check("reward", self.reward in ("judge", "rules"), "'judge' or 'rules'")
        self._check("judge_concurrency", self.judge_concurrency >= 1, ">= 1")
        self._check("judge_timeout", self.judge_timeout > 0, "> 0")
        self._check("judge_outage_rate", 0 <= self.judge_outage_rate < 1, "in [0, 1)")
        self._check("max_judge_outage_steps", self.max_judge_outage_steps >= 0, ">= 0")
        if not (self.chain_loss or self.image_loss):
            raise ValueError("GRPOConfig: chain_loss and image_loss are both False; the loss would cover nothing")
