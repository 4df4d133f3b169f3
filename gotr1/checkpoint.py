"""Atomic, complete training checkpoints shared by the SFT and GRPO trainers.

A checkpoint is a folder ``step-NNNNNNN`` holding the model in Hugging Face format (``save_pretrained``,
safetensors; only the adapter for a LoRA model), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (Python,
numpy, torch and CUDA generator states) and ``state.json`` (step, data position, anything the trainer
needs to continue). It is written into a temporary folder and renamed into place, and ``latest`` is
replaced atomically afterwards, so a run killed at any moment leaves either the previous checkpoint or the
new one, never a half-written folder that resuming would trust.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

LATEST = "latest"


def rng_state() -> dict:
    """Every random generator a training step draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _quiet_transformers_bars():
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def save_checkpoint(output_dir: str | Path, step: int, model, optimizer, scheduler, state: dict,
                    keep_last: int | None = None, processor=None, model_state: dict | None = None,
                    optimizer_state: dict | None = None) -> Path:
    """Write a complete checkpoint of ``step`` under ``output_dir`` and point ``latest`` at it.

    Parameters
    ----------
    model : PreTrainedModel or PeftModel
        Saved with ``save_pretrained`` (safetensors).
    state : dict
        JSON-serialisable trainer state (data position, counters); ``step`` is added.
    keep_last : int, optional
        Delete older checkpoints beyond the newest ``keep_last``.
    processor : optional
        Saved beside the model, so ``checkpoint/model`` loads on its own (``gotr1.model.load_policy``).
    model_state, optimizer_state : dict, optional
        What to save instead of ``model.state_dict()`` / ``optimizer.state_dict()``: the unsharded states
        of an FSDP-sharded run (:mod:`gotr1.sharding`).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"step-{step:07d}"
    tmp = output_dir / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with _quiet_transformers_bars():  # one bar per save for one shard floods a training log
        model.save_pretrained(tmp / "model", safe_serialization=True, state_dict=model_state)
    if processor is not None:
        processor.save_pretrained(tmp / "model")
    torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    _write_text_atomic(tmp / "state.json", json.dumps({**state, "step": step}, indent=1))
    if final.exists():  # a previous run died after renaming but before updating `latest`
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(output_dir / LATEST, final.name)
    if keep_last is not None:
        for old in sorted(output_dir.glob("step-*"))[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself or from a run folder holding ``latest``."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    if (path / LATEST).is_file():
        return path / (path / LATEST).read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"resume_from={str(path)!r} is neither a checkpoint folder nor a run folder with '{LATEST}'")


def read_trainer_state(checkpoint: str | Path) -> dict:
    """The trainer's ``state.json`` of a checkpoint folder."""
    return json.loads((Path(checkpoint) / "state.json").read_text(encoding="utf-8"))


def load_training_state(checkpoint: str | Path, optimizer, scheduler, load_optimizer_state=None) -> dict:
    """Restore optimizer, scheduler and RNG states; returns the trainer's ``state.json``.

    The model weights are loaded by the caller (full model or adapter) from ``checkpoint/model``.
    ``load_optimizer_state(state)`` replaces ``optimizer.load_state_dict`` (a sharded run's loader).
    """
    checkpoint = Path(checkpoint)
    saved = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=False)
    (load_optimizer_state or optimizer.load_state_dict)(saved)
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=False))
    return read_trainer_state(checkpoint)
