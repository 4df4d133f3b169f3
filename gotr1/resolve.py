"""Turning command-line and config names into objects: policies, judges, prompt lists.

A policy name is ``tiny`` (random weights), ``demo`` (the demo's starting policy: tiny at 64 px with the
shipped VQ tokenizer), a hub id or a folder in Hugging Face format, a checkpoint
folder written by a gotr1 trainer (``step-NNNNNNN``, its ``model`` inside) or a run folder holding
``latest``. A LoRA checkpoint is loaded onto its base model and merged, so what comes back is always a
plain ``JanusForConditionalGeneration`` that a next stage can wrap in fresh adapters.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from gotr1.checkpoint import LATEST, resolve_checkpoint
from gotr1.model import load_policy, tiny_janus

COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")


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
        from gotr1.demo import demo_policy

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


def read_prompts(spec: str) -> dict[str, list[str]]:
    """Prompts by category: a text file (category = its stem) or T2I-CompBench categories joined by commas
    (the validation lists shipped with gotr1)."""
    path = Path(spec)
    if path.is_file():
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"prompts: {path} holds no prompts")
        return {path.stem: prompts}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPBENCH_CATEGORIES]
    if not names or unknown:
        raise ValueError(f"prompts: {spec!r} is neither a file nor T2I-CompBench categories "
                         f"(known: {', '.join(COMPBENCH_CATEGORIES)})")
    folder = resources.files("gotr1").joinpath("assets/t2i_compbench")
    return {n: [l.strip() for l in folder.joinpath(f"{n}_val.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
            for n in names}


def build_judge(kind: str, url: str = "http://127.0.0.1:8000/v1", model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
                concurrency: int = 32, timeout: float = 120.0, device=None):
    """A judge: ``openai`` (server at ``url`` serving ``model``), ``tiny`` (random weights) or a Qwen2.5-VL
    checkpoint path / hub id run in process."""
    from gotr1.rewards import OpenAIJudge, TransformersJudge, tiny_judge

    if kind == "openai":
        return OpenAIJudge(url, model, concurrency=concurrency, timeout=timeout)
    if kind == "tiny":
        return tiny_judge()
    return TransformersJudge.from_pretrained(kind, device=device)
