"""Atomic, complete training checkpoints shared by the SFT and GRPO trainers.

A checkpoint is a folder ``step-NNNNNNN`` holding the model in Hugging Face format (``save_pretrained``,
safetensors; only the adapter for a LoRA model), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (Python,
numpy, torch and CUDA generator states) and ``state.json`` (step, data position, anything the trainer
needs to continue). It is written into a temporary folder and renamed into place, and ``latest`` is
replaced atomically afterwards, so a run killed at any moment leaves either the previous checkpoint or the
new one, never a half-written folder that resuming would trust. ``checksums.json`` records the SHA-256 of every
file, and :func:`verify_checkpoint` checks them before a resume trusts the folder: a file damaged on disk
is refused by name, with the newest intact checkpoint of the run offered instead. :func:`load_model_weights`
puts saved weights back into a model, refusing damaged or non-finite ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

LATEST = "latest"
CHECKSUMS = "checksums.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing, damaged or unreadable; the message names it."""


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
        Saved beside the model, so ``checkpoint/model`` loads on its own (``gotr1.policy.model.load_policy``).
    model_state, optimizer_state : dict, optional
        What to save instead of ``model.state_dict()`` / ``optimizer.state_dict()``: the unsharded states
        of an FSDP-sharded run (:mod:`gotr1.policy.sharding`).
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
    _write_text_atomic(tmp / CHECKSUMS, json.dumps(_checksums(tmp), indent=1, sort_keys=True))
    if final.exists():  # a previous run died after renaming but before updating `latest`
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(output_dir / LATEST, final.name)
    if keep_last is not None:  # the newest by step number; the one just written is never among those removed
        older = [p for p in sorted(output_dir.glob("step-*"), key=_step_of) if _step_of(p) < step]
        for old in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def resume_checkpoint(resume_from: str | Path, output_dir: str | Path) -> Path:
    """The checkpoint a run resumes from, refused before any weights load when it cannot be trusted.

    Resolves a run folder to its ``latest``, refuses an older checkpoint in a folder with newer ones
    (:func:`check_resume_target`) and checks every file (:func:`verify_checkpoint`).
    """
    checkpoint = resolve_checkpoint(resume_from)
    check_resume_target(checkpoint, output_dir)
    verify_checkpoint(checkpoint)
    return checkpoint


def check_resume_target(checkpoint: str | Path, output_dir: str | Path) -> None:
    """Refuse to resume an older checkpoint into a run folder that holds newer ones.

    Training on from step 4 in the folder that holds steps 6-10 would overwrite step 6 and prune the rest,
    and ``latest`` would no longer describe the run. Resume into another ``output_dir`` to branch.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if checkpoint.parent.resolve() != output_dir.resolve():
        return
    newer = [p.name for p in sorted(output_dir.glob("step-*"), key=_step_of) if _step_of(p) > _step_of(checkpoint)]
    if newer:
        raise ValueError(f"resume_from={str(checkpoint)!r} is older than {', '.join(newer)} in output_dir={str(output_dir)!r}; "
                         "resuming there would overwrite them. Resume from the run folder (its latest checkpoint), or "
                         "set output_dir to a new folder to branch from this step")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS and not p.name.endswith(".tmp")}


# Checkpoints this process has verified, with the size and modification time of each file when it did.
_VERIFIED: set[tuple] = set()


def verify_checkpoint(checkpoint: str | Path) -> None:
    """Check every file of a checkpoint against ``checksums.json`` (older checkpoints without it: skipped).

    Raises
    ------
    CorruptCheckpointError
        Naming the first missing or damaged file, and the newest intact checkpoint beside it if any.
    """
    checkpoint = Path(checkpoint)
    listed = checkpoint / CHECKSUMS
    if not listed.is_file():
        return
    try:
        expected = json.loads(listed.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CorruptCheckpointError(f"{listed}: unreadable ({err}){_fallback_hint(checkpoint)}") from None
    for name in expected:
        if not (checkpoint / name).is_file():
            raise CorruptCheckpointError(f"{checkpoint / name}: missing from the checkpoint{_fallback_hint(checkpoint)}")
    # The command line checks a checkpoint before the trainer does: hash the weights once, not twice.
    stamp = (str(checkpoint.resolve()), tuple((n, (checkpoint / n).stat().st_size, (checkpoint / n).stat().st_mtime_ns)
                                              for n in sorted(expected)))
    if stamp in _VERIFIED:
        return
    for name, digest in expected.items():
        if _sha256(checkpoint / name) != digest:
            raise CorruptCheckpointError(f"{checkpoint / name}: damaged (its SHA-256 differs from {CHECKSUMS})"
                                         f"{_fallback_hint(checkpoint)}")
    _VERIFIED.add(stamp)


def _fallback_hint(checkpoint: Path) -> str:
    """'; resume from X instead' for the newest older checkpoint of the run that verifies, or ''."""
    older = [p for p in sorted(checkpoint.parent.glob("step-*"), key=_step_of, reverse=True) if _step_of(p) < _step_of(checkpoint)]
    for candidate in older:
        try:
            verify_checkpoint(candidate)
        except CorruptCheckpointError:
            continue
        return f"; the newest intact checkpoint is {candidate} (resume from it into a new output_dir)"
    return ""


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself or from a run folder holding ``latest``."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    if (path / LATEST).is_file():
        return path / (path / LATEST).read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"resume_from={str(path)!r} is neither a checkpoint folder nor a run folder with '{LATEST}'")


def read_trainer_state(checkpoint: str | Path) -> dict:
    """The trainer's ``state.json`` of a checkpoint folder (an unreadable one is named)."""
    path = Path(checkpoint) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CorruptCheckpointError(f"{path}: not a trainer state with an integer 'step'")
    return state


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, empty or foreign files fail in many ways; name the file
        raise CorruptCheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def load_training_state(checkpoint: str | Path, optimizer, scheduler, load_optimizer_state=None) -> dict:
    """Restore optimizer, scheduler and RNG states; returns the trainer's ``state.json``.

    The model weights are loaded by the caller (full model or adapter) from ``checkpoint/model``.
    ``load_optimizer_state(state)`` replaces ``optimizer.load_state_dict`` (a sharded run's loader).
    """
    checkpoint = Path(checkpoint)
    state = read_trainer_state(checkpoint)
    (load_optimizer_state or optimizer.load_state_dict)(_load(checkpoint / "optimizer.pt"))
    scheduler.load_state_dict(_load(checkpoint / "scheduler.pt"))
    set_rng_state(_load(checkpoint / "rng.pt"))
    return state


def _read_weights(file: Path) -> dict:
    """A safetensors file's tensors; a damaged file or non-finite weights are refused by name."""
    try:
        tensors = load_file(file)
    except Exception as err:  # truncated or overwritten files fail inside safetensors in many ways
        raise CorruptCheckpointError(f"{file}: unreadable weights ({type(err).__name__}: {err})") from None
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CorruptCheckpointError(f"{file}: non-finite values in {bad[:3]}; the file is damaged or the run diverged")
    return tensors


def load_model_weights(model, folder: str | Path) -> None:
    """Load what :func:`save_checkpoint` saved of ``model`` (adapter or full weights)."""
    folder = Path(folder)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, _read_weights(folder / "adapter_model.safetensors"))
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state = {}
    for file in files:
        state.update(_read_weights(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - set(dict(model.named_parameters()))
    if unexpected or set(missing) - tied:
        raise ValueError(f"checkpoint {folder} does not fit the model: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
