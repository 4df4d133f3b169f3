"""Stage 2's configuration: what the GRPO trainer reads (rollout, loss, reliability), nothing else.

The reward and the prompts are the trainer's constructor arguments; which judge to build from the command
line is :class:`gotr1.cli.jobs.GRPOJob`'s. Sampling fields are flat (one YAML key each) and form a
:class:`~gotr1.rollout.sampling.Sampling`, which validates them; the loss and advantage names are the
kernels' own lists.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from gotr1.kernels.grpo_loss import LOSS_TYPES, SCALES, grpo_loss
from gotr1.rollout.sampling import Sampling
from gotr1.train.config import TrainingConfig
from gotr1.validation import require

_SAMPLING = Sampling()
CISPO_EPS_HIGH = inspect.signature(grpo_loss).parameters["cispo_eps_high"].default  # the kernels' (TRL's)


@dataclass
class GRPOConfig(TrainingConfig):
    """Stage 2: GRPO with dual-stage rewards.

    Defaults are the paper's (Sec. 4.1) and the conventions of ``docs/architecture.md``.
    """

    # --- rollout -----------------------------------------------------------------------------
    prompts_per_step: int = 8
    """Prompts (groups) per step (GoT-R1: 8)."""
    group_size: int = 16
    """Samples per prompt, ``G`` (GoT-R1: 16)."""
    max_chain_tokens: int = _SAMPLING.max_chain_tokens
    """Cap on chain tokens; ``<begin_of_image>`` is appended at the cap (GoT-R1's reference: 600)."""
    temperature: float = _SAMPLING.temperature
    """Sampling temperature of chain and image tokens (GoT-R1: 1.0); log-probs are taken at it too."""
    guidance: float = _SAMPLING.guidance
    """Classifier-free guidance scale of the image tokens (Janus-Pro: 5)."""
    top_k: int | None = _SAMPLING.top_k
    """Top-k restriction of both stages (None: plain multinomial, as GoT-R1)."""
    top_p: float | None = _SAMPLING.top_p
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
    """``grpo`` (mean of per-sequence token means), ``bnpo`` (token mean), ``dr_grpo`` (sum / (B * max_len)),
    ``dapo`` (sum / active tokens of the whole global batch, DAPO's token-level loss; here the same
    normalisation as ``bnpo``, which gotr1 already takes over every micro-batch and rank), ``cispo``
    (REINFORCE weighted by the detached ratio clipped above at ``cispo_eps_high``, MiniMax-M1; normalised
    as ``dapo``). The README's "GRPO loss options" has each formula."""
    cispo_eps_high: float = CISPO_EPS_HIGH
    """``cispo`` only: upper bound of the detached importance weight ``min(rho, cispo_eps_high)`` (TRL's
    ``epsilon_high`` under ``loss_type="cispo"``)."""
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
    mask_truncated_chains: bool = False
    """Leave out of the loss the chain tokens of rows that hit ``max_chain_tokens`` without sampling
    ``<begin_of_image>`` (DAPO's overlong filtering); their image tokens stay in (logged: ``truncated_chains``)."""
    entropy_coef: float = 0.0
    """Entropy bonus: ``- entropy_coef * H`` per token in the loss (0: none)."""
    top_entropy_quantile: float = 1.0
    """< 1: only tokens whose entropy under the trainer (teacher-forced, per head, per rank's batch) is at or
    above this quantile get weight (Wang et al. 2025, "the 80/20 rule": 0.8); 1 keeps every token."""

    # --- dynamic sampling and off-policy correction ----------------------------------------
    filter_zero_std_groups: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal (NaN-aware) and draw more prompts until
    the step has ``prompts_per_step`` informative groups or ``max_extra_rollouts`` extra rollouts were made;
    then train on those (slots still empty hold dropped groups, out of the loss). Under several ranks each rank
    fills its own share; every rank makes the same number of rollouts (the ranks decide together)."""
    max_extra_rollouts: int = 4
    """Cap on the extra rollouts (each of ``prompts_per_step`` prompts) one step may draw to fill its groups."""
    tis_cap: float | None = None
    """Truncated importance sampling (Yao et al. 2025): weight each token by
    ``min(exp(logp_train - logp_rollout), tis_cap)``, the gap between the trainer's teacher-forced log-probs
    and the rollout's; the ratio's old policy is then the trainer's. None: off."""
    tis_level: str = "token"
    """``token`` TIS weights, or one per ``sequence`` from its summed log-ratio (chain and image tokens)."""

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
    alarm_window: int = 20
    """Reward-hacking alarms: compare each reward component's mean over the last this many steps with the
    window before (0: off); see :mod:`gotr1.grpo.guard`."""
    alarm_delta: float = 0.05
    """An alarm: one component rose by more than this while another fell by more than this."""
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
            require(self, name, getattr(self, name) >= 1, ">= 1")
        require(self, "group_size", self.group_size >= 2, ">= 2 (advantages compare samples of one prompt)")
        try:
            self.sampling
        except ValueError as err:
            raise ValueError(str(err).replace("Sampling.", "GRPOConfig.", 1)) from None
        for name in ("beta", "eps_low", "eps_high", "sample_every", "entropy_coef", "max_extra_rollouts"):
            require(self, name, getattr(self, name) >= 0, ">= 0")
        require(self, "delta", self.delta is None or self.delta > 1, "> 1 or None")
        require(self, "loss_type", self.loss_type in LOSS_TYPES, f"one of {LOSS_TYPES}")
        require(self, "cispo_eps_high", self.cispo_eps_high > 0, "> 0")
        require(self, "top_entropy_quantile", 0 < self.top_entropy_quantile <= 1, "in (0, 1]")
        require(self, "tis_cap", self.tis_cap is None or self.tis_cap > 0, "> 0 or None (off)")
        require(self, "tis_level", self.tis_level in ("token", "sequence"), "'token' or 'sequence'")
        require(self, "importance_level", self.importance_level in ("token", "sequence"), "'token' or 'sequence'")
        require(self, "scale_rewards", self.scale_rewards in SCALES, f"one of {SCALES}")
        require(self, "judge_outage_rate", 0 <= self.judge_outage_rate < 1, "in [0, 1)")
        require(self, "alarm_window", self.alarm_window >= 0, ">= 0")
        require(self, "alarm_delta", self.alarm_delta > 0, "> 0")
        require(self, "max_judge_outage_steps", self.max_judge_outage_steps >= 0, ">= 0")
        if not (self.chain_loss or self.image_loss):
            raise ValueError("GRPOConfig: chain_loss and image_loss are both False; the loss would cover nothing")

    @property
    def sampling(self) -> Sampling:
        """The rollout's sampling settings (the seed is set per step and rank by the trainer)."""
        return Sampling(max_chain_tokens=self.max_chain_tokens, temperature=self.temperature, top_k=self.top_k,
                        top_p=self.top_p, guidance=self.guidance, seed=self.seed)
