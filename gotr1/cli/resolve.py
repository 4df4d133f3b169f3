"""Turning command-line names into objects: policies, judges, GRPO rewards.

A policy name is ``tiny`` (random weights), ``demo`` (the demo's starting policy: tiny at 64 px with the
shipped VQ tokenizer), a hub id or a folder in Hugging Face format, a checkpoint
folder written by a gotr1 trainer (``step-NNNNNNN``, its ``model`` inside) or a run folder holding
``latest``. A LoRA checkpoint is loaded onto its base model and merged, so what comes back is always a
plain ``JanusForConditionalGeneration`` that a next stage can wrap in fresh adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

from gotr1.cli.jobs import GRPOJob, JudgeSettings
from gotr1.policy.model import load_policy, tiny_janus
from gotr1.train.checkpoint import LATEST, resolve_checkpoint


def _model_folder(path: Path) -> Path:
    """The Hugging Face folder inside a run folder or checkpoint folder, or ``path`` itself."""
    if (path / LATEST).is_file() or (path / "state.json").is_file():
        return resolve_checkpoint(path) / "model"
    return path


def _looks_like_a_path(name: str) -> bool:
    """A name no hub id can be: absolute, relative to '.' or '~', or with more than one '/'."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_any_policy(name: str, dtype=None, device=None):
    """``(model, processor)`` of a policy name (see the module docstring)."""
    if name == "tiny":
        model, processor = tiny_janus()
        return model.to(device or "cpu"), processor
    if name == "demo":
        from gotr1.demo.run import demo_policy

        model, processor = demo_policy()
        return model.to(device or "cpu"), processor
    path = Path(name)
    if not path.exists():
        if _looks_like_a_path(name):
            raise FileNotFoundError(f"model: {name} does not exist (a local folder; hub ids look like 'org/name')")
        return load_policy(name, dtype=dtype, device=device)
    folder = _model_folder(path)
    adapter = folder / "adapter_config.json"
    if not adapter.is_file():
        return load_policy(str(folder), dtype=dtype, device=device)
    from peft import PeftModel

    base = json.loads(adapter.read_text())["base_model_name_or_path"]
    if not base:
        raise ValueError(f"{folder}: a LoRA adapter without base_model_name_or_path; load its base model yourself")
    model, _ = load_policy(base, dtype=dtype, device=device)
    from transformers import JanusProcessor

    processor = JanusProcessor.from_pretrained(folder)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    return PeftModel.from_pretrained(model, folder).merge_and_unload().eval(), processor


def build_judge(settings: JudgeSettings, device=None):
    """A judge: ``openai`` (a server at ``judge_url`` serving ``judge_model``), ``tiny`` (random weights) or a
    Qwen2.5-VL checkpoint path / hub id run in process."""
    from gotr1.rewards import OpenAIJudge, TransformersJudge, tiny_judge

    if settings.judge == "openai":
        return OpenAIJudge(settings.judge_url, settings.judge_model, concurrency=settings.judge_concurrency,
                           timeout=settings.judge_timeout)
    if settings.judge == "tiny":
        return tiny_judge()
    return TransformersJudge.from_pretrained(settings.judge, device=device)


def build_reward(job: GRPOJob, device=None):
    """The policy reward of a ``gotr1 grpo`` job: the judge's four rewards, the offline rule rewards, or a
    composition of the judge and reward models (a mapping or a preset, :mod:`gotr1.rewards.compose`)."""
    from gotr1.rewards import ColorRuleReward, JudgeReward, LayoutRuleReward, RewardConfig, RuleReward

    if job.composed:
        from gotr1.rewards.compose import build_composed_reward, parse_reward_spec

        spec = parse_reward_spec(job.reward if isinstance(job.reward, dict) else None, job.reward_preset)
        return build_composed_reward(spec, lambda: build_judge(job, device), tiny=job.tiny_reward_models)
    if job.reward == "rules":
        return RuleReward({"layout": LayoutRuleReward(), "color": ColorRuleReward()}, job.reward_mode)
    return JudgeReward(build_judge(job, device), RewardConfig(mode=job.reward_mode))
