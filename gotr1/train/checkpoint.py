"""Atomic, complete training checkpoints shared by the SFT and GRPO trainers.

A checkpoint is a folder ``step-NNNNNNN`` holding the model in Hugging Face format (``save_pretrained``,
safetensors; only the adapter for a LoRA model), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (Python,
numpy, torch and CUDA generator states) and ``state.json`` (step, data position, anything the trainer
needs to continue). It is written into a temporary folder and renamed into place, and ``latest`` is
replaced atomically afterwards, so a run killed at any moment leaves either the previous checkpoint or the
new one, never a half-written folder that resuming would trust. ``checksums.json`` records the SHA-256 of every
file, and :func:`verify_checkpoint` checks them before a resume trusts the folder: a file damaged on disk,
or a checkpoint without ``checksums.json`` (incomplete, or not written by gotr1), is refused by name, with
the newest intact checkpoint of the run offered instead; ``trust_unverified`` resumes a hand-made one.
:func:`load_model_weights` puts saved weights back into a model, refusing damaged or non-finite ones.

Who may get in: the ``.pt`` files hold only tensors and plain values (RNG states included) and are loaded
with ``torch.load(weights_only=True)``, so a checkpoint from someone else cannot run code when resumed; a
file that holds anything else is refused, naming the Python objects it would have built.

A save that fails removes its temporary folder and leaves the last good checkpoint and ``latest`` as they
were; when the disk is full it raises :class:`DiskFullError` naming the folder, the free space and the size
a checkpoint needs. Before each save the free space is checked, with one warning per run folder when fewer
than two checkpoints fit. Every file of a checkpoint gets the mode a new file gets under the umask.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import shutil
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from gotr1.train.run_folder import LOCK_FILE

LATEST = "latest"
CHECKSUMS = "checksums.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing, damaged or unreadable; the message names it."""


class UnsafeCheckpointError(CorruptCheckpointError):
    """A checkpoint file holds Python objects beyond tensors and plain values: loading it could run code."""


class DiskFullError(OSError):
    """A checkpoint did not fit on the disk; the message names the folder, the free space and the size needed."""

    def __init__(self, message: str, folder: Path):
        super().__init__(errno.ENOSPC, message, str(folder))

    def __str__(self) -> str:
        return self.strerror


def rng_state() -> dict:
    """Every random generator a training step draws from, as tensors and plain Python values (so that
    ``torch.load(weights_only=True)`` reads them back)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                 numpy["gauss"])
    np.random.set_state(numpy)  # a tuple holding a numpy array: rng.pt of checkpoints written before
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

    Raises
    ------
    DiskFullError
        The disk filled while writing; nothing of this checkpoint is left, the previous ones and ``latest``
        are as they were. Any other failure is raised as it is, after the same clean-up.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"step-{step:07d}"
    tmp = output_dir / f".tmp-step-{step:07d}"
    needed = _checkpoint_bytes(output_dir) or _estimated_bytes(model, optimizer, model_state, optimizer_state)
    _warn_if_short_of_space(output_dir, needed)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
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
        _umask_modes(tmp)
        if final.exists():  # a previous run died after renaming but before updating `latest`
            shutil.rmtree(final)
        os.replace(tmp, final)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(err, output_dir, final, needed)
        raise
    try:
        _write_text_atomic(output_dir / LATEST, final.name)
    except Exception as err:  # `latest` still names the last good checkpoint: take back the one it does not
        shutil.rmtree(final, ignore_errors=True)
        (output_dir / f"{LATEST}.tmp").unlink(missing_ok=True)
        _raise_if_disk_full(err, output_dir, final, needed)
        raise
    if keep_last is not None:  # the newest by step number; the one just written is never among those removed
        older = [p for p in sorted(output_dir.glob("step-*"), key=_step_of) if _step_of(p) < step]
        for old in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _umask_modes(folder: Path) -> None:
    """Give every file under ``folder`` the mode a new file gets under the umask (``save_pretrained`` writes
    the weights 0600, everything else honours the umask). Read from a probe file: setting the umask to read
    it would race with other threads creating files."""
    probe = folder / ".mode-probe"
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


# ---------------------------------------------------------------------------------------------
# Disk space
# ---------------------------------------------------------------------------------------------

_SHORT_OF_SPACE: set[str] = set()  # run folders already warned about


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _checkpoint_bytes(output_dir: Path) -> int | None:
    """Size on disk of the run's ``latest`` checkpoint, if it has one."""
    try:
        latest = output_dir / (output_dir / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return sum(p.stat().st_size for p in latest.rglob("*") if p.is_file()) or None


def _estimated_bytes(model, optimizer, model_state: dict | None, optimizer_state: dict | None) -> int:
    """Bytes of the tensors a first checkpoint writes: the model's (a LoRA model's trainable ones) and the
    optimizer's state."""
    if model_state is not None:
        weights = list(model_state.values())
    elif hasattr(model, "peft_config"):
        weights = [p for p in model.parameters() if p.requires_grad]
    else:
        weights = list(model.state_dict().values())
    moments = (optimizer.state_dict() if optimizer_state is None else optimizer_state).get("state", {}).values()
    tensors = weights + [t for entry in moments for t in entry.values()]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _warn_if_short_of_space(output_dir: Path, needed: int) -> None:
    free = shutil.disk_usage(output_dir).free
    key = str(output_dir.resolve())
    if free < 2 * needed and key not in _SHORT_OF_SPACE:
        _SHORT_OF_SPACE.add(key)
        warnings.warn(f"{output_dir}: {_megabytes(free)} free, fewer than two checkpoints of about "
                      f"{_megabytes(needed)} fit; a save that finds the disk full stops the run, keeping the last "
                      "good checkpoint", stacklevel=3)


def _raise_if_disk_full(err: Exception, output_dir: Path, checkpoint: Path, needed: int) -> None:
    """:class:`DiskFullError` from ``err`` when the disk is full: an ENOSPC / EDQUOT anywhere in the chain, or
    less free space than a checkpoint needs (torch and safetensors report a full disk in their own words)."""
    chain, cause = [], err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    free = shutil.disk_usage(output_dir).free
    if not any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) for e in chain) and free >= needed:
        return
    try:
        last = (output_dir / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        last = "none yet"
    raise DiskFullError(f"{output_dir}: the disk is full: checkpoint {checkpoint.name} needs about "
                        f"{_megabytes(needed)} and {_megabytes(free)} are free; nothing of it was kept, and the last "
                        f"good checkpoint ({last}) and '{LATEST}' are as they were. Free space (or lower keep_last), "
                        f"then resume (--resume {output_dir})", output_dir) from err


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def resume_checkpoint(resume_from: str | Path, output_dir: str | Path, trust_unverified: bool = False) -> Path:
    """The checkpoint a run resumes from, refused before any weights load when it cannot be trusted.

    Resolves a run folder to its ``latest``, refuses an older checkpoint in a folder with newer ones
    (:func:`check_resume_target`) and checks every file (:func:`verify_checkpoint`).
    """
    checkpoint = resolve_checkpoint(resume_from)
    check_resume_target(checkpoint, output_dir)
    verify_checkpoint(checkpoint, trust_unverified)
    return checkpoint


def in_run_folder(checkpoint: str | Path, output_dir: str | Path) -> bool:
    """Whether ``checkpoint`` is one of ``output_dir``'s own (resuming it continues that run in place)."""
    return Path(checkpoint).parent.resolve() == Path(output_dir).resolve()


def check_resume_target(checkpoint: str | Path, output_dir: str | Path) -> None:
    """Refuse to resume an older checkpoint into a run folder that holds newer ones.

    Training on from step 4 in the folder that holds steps 6-10 would overwrite step 6 and prune the rest,
    and ``latest`` would no longer describe the run. Resume into another ``output_dir`` to branch.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if not in_run_folder(checkpoint, output_dir):
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


def verify_checkpoint(checkpoint: str | Path, trust_unverified: bool = False) -> None:
    """Check every file of a checkpoint against ``checksums.json``.

    gotr1 writes ``checksums.json`` into every checkpoint, so a checkpoint without it is incomplete or was
    tampered with: refused, unless ``trust_unverified`` (a checkpoint made by hand), which skips the check
    with a warning. The loaders still refuse unreadable files and non-finite weights by name.

    Raises
    ------
    CorruptCheckpointError
        Naming the first missing or damaged file, and the newest intact checkpoint beside it if any.
    """
    checkpoint = Path(checkpoint)
    listed = checkpoint / CHECKSUMS
    if not listed.is_file():
        if trust_unverified:
            warnings.warn(f"{checkpoint}: no {CHECKSUMS}; resuming it unverified (trust_unverified)", stacklevel=2)
            return
        raise CorruptCheckpointError(f"{listed}: missing, so nothing in {checkpoint} can be verified (every checkpoint "
                                     "gotr1 writes has one: this one is incomplete or was altered)"
                                     f"{_fallback_hint(checkpoint)}; to resume a checkpoint made by hand, pass "
                                     "--trust-unverified (trust_unverified=True)")
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
    if path.is_dir() and any((path / name).exists() for name in ("config.yaml", "metrics.jsonl", LOCK_FILE)):
        raise FileNotFoundError(f"resume_from={str(path)!r}: no checkpoint was completed in this run folder (the run "
                                "stopped before its first save), so there is nothing to resume. Run it again without "
                                "--resume; --overwrite moves what it left aside")
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


def _numpy_array_globals() -> list:
    """What unpickling a uint32 numpy array needs: the RNG state in ``rng.pt`` of checkpoints written before
    RNG states were stored as tensors. Building a numeric array runs no code of the file's choosing."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def _load(path: Path, allowed: list | None = None):
    """``torch.load(weights_only=True)`` of a checkpoint file: tensors and plain values (and ``allowed``), else
    refused."""
    try:
        with torch.serialization.safe_globals(allowed or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            objects = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # reads the names, builds nothing
        except Exception:  # not even a readable archive: damaged rather than foreign
            objects = []
        if objects:
            raise UnsafeCheckpointError(
                f"{path}: refused: it would build Python objects that are not tensors or plain values "
                f"({', '.join(objects[:5])}), and loading it could run code from whoever wrote it. gotr1 writes no "
                "such objects; do not resume this checkpoint unless you rebuild it from a source you trust") from None
        raise CorruptCheckpointError(f"{path}: unreadable (not a torch file gotr1 wrote)") from None
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
    set_rng_state(_load(checkpoint / "rng.pt", allowed=_numpy_array_globals()))
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
