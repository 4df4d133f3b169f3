"""What only the command line needs: which policy to load, which judge and reward to build, which prompts.

A trainer config (:class:`~gotr1.train.config.SFTConfig`, :class:`~gotr1.grpo.config.GRPOConfig`) holds what
the trainer reads; these settings hold what ``gotr1 sft`` / ``gotr1 grpo`` / ``gotr1 eval`` read to build the
trainer's arguments. A YAML file mixes both kinds of keys (``model: ...`` beside ``lr: ...``), and
:func:`gotr1.cli.config_io.load_sections` sorts each key to its owner. Every default is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from gotr1.validation import require


@dataclass
class PolicySettings:
    """The policy a command loads."""

    model: str = "tiny"
    """Policy: a Janus-Pro checkpoint (hub id or local folder), a gotr1 checkpoint or run folder, ``"demo"`` or
    ``"tiny"`` (random weights)."""
    dtype: str | None = None
    """Weight dtype (``"bfloat16"``, ``"float32"``); default the checkpoint's."""


@dataclass
class JudgeSettings:
    """The MLLM judge a command builds."""

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
    """Seconds per judge request attempt before it is retried, then scored 0 (OpenAI backend)."""

    def __post_init__(self):
        require(self, "judge_concurrency", self.judge_concurrency >= 1, ">= 1")
        require(self, "judge_timeout", self.judge_timeout > 0, "> 0")


@dataclass
class GRPOJob(PolicySettings, JudgeSettings):
    """What ``gotr1 grpo`` builds the trainer from, besides its :class:`~gotr1.grpo.config.GRPOConfig`."""

    prompts: str = "color,shape,texture,spatial,non_spatial,complex"
    """Training prompts, sources joined by commas, each optionally weighted (``color_train:1,spatial_train:2,p.jsonl:1``):
    T2I-CompBench lists by name (validation ``color``..., training ``color_train``...), a text file (one prompt a
    line) or a JSONL file with a ``prompt`` field (T2I-R1's file as is). Weights set each source's share of the
    training list (:func:`gotr1.prompt_sets.read_prompt_mixture`)."""
    reward: str | dict = "judge"
    """``judge`` (GoT-R1's four MLLM rewards), ``rules`` (offline layout and colour rule rewards), or a mapping
    composing the judge and reward models (``{judge: true, hps: {weight: 1, device: cuda:1}, combine: product}``;
    see :mod:`gotr1.rewards.compose`; on the command line as YAML text)."""
    reward_preset: str | None = None
    """A published reward: ``got-r1`` (the judge's product times R_HPS), ``got-r1-arxiv`` (without R_HPS) or
    ``t2i-r1`` (T2I-R1's ensemble); a ``reward`` mapping is laid over it."""
    reward_mode: str = "product"
    """How ``judge`` / ``rules`` components combine: ``product`` (GoT-R1) or ``sum`` (the paper's weaker ablation)."""
    tiny_reward_models: bool = False
    """Random-weight tiny reward models instead of the real ones (offline smoke runs; the scores mean nothing)."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.reward, str) and self.reward.lstrip().startswith("{"):
            self.reward = yaml.safe_load(self.reward)  # a mapping given as text on the command line
        if isinstance(self.reward, str):
            require(self, "reward", self.reward in ("judge", "rules"), "'judge', 'rules' or a mapping")
        require(self, "reward_mode", self.reward_mode in ("product", "sum"), "'product' or 'sum'")

    @property
    def composed(self) -> bool:
        """Whether the reward is a composition (a mapping or a preset) rather than ``judge`` / ``rules``."""
        return isinstance(self.reward, dict) or self.reward_preset is not None
