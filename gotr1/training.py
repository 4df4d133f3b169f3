"""Pieces every gotr1 trainer shares: policy preparation, AdamW + warm-up/cosine schedule, weight
restoring for resume, and the per-step metrics log."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from gotr1.lora import apply_lora
from gotr1.model import janus_parts


def prepare_policy(model, processor, config):
    """The trainable policy of a :class:`~gotr1.config.TrainingConfig`: LoRA-wrapped or fully trainable
    language model (the VQ model, vision tower and image heads frozen either way), in train mode."""
    if config.use_lora:
        # The adapters' random initialisation comes from config.seed alone, not from whatever the process
        # drew before (two runs of one config would otherwise start from different adapters).
        cuda = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(config.seed)
            model = apply_lora(model, processor, config.lora_rank, config.lora_alpha, config.lora_dropout,
                               config.lora_target_modules)
    else:
        model.requires_grad_(False)
        janus = janus_parts(model)
        for module in (janus.model.language_model, janus.lm_head, janus.model.generation_head,
                       janus.model.generation_aligner, janus.model.generation_embeddings):
            module.requires_grad_(True)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def build_optimizer(model, config):
    """AdamW over the trainable parameters and a linear warm-up then cosine decay to zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    warmup, total = config.warmup_steps, config.max_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _read_weights(file: Path) -> dict:
    """A safetensors file's tensors; a damaged file or non-finite weights are refused by name."""
    from gotr1.checkpoint import CorruptCheckpointError

    try:
        tensors = load_file(file)
    except Exception as err:  # truncated or overwritten files fail inside safetensors in many ways
        raise CorruptCheckpointError(f"{file}: unreadable weights ({type(err).__name__}: {err})") from None
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CorruptCheckpointError(f"{file}: non-finite values in {bad[:3]}; the file is damaged or the run diverged")
    return tensors


def load_model_weights(model, folder: str | Path) -> None:
    """Load what :func:`gotr1.checkpoint.save_checkpoint` saved of ``model`` (adapter or full weights)."""
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


class EpochSampler:
    """Indices ``0..n-1`` in a fresh seeded permutation each epoch, drawn in order.

    Its whole state is ``(epoch, cursor)``, saved in checkpoints, so a resumed run draws exactly the
    indices the interrupted one would have drawn.
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, cursor: int = 0):
        if n < 1:
            raise ValueError(f"cannot sample from an empty set (n={n})")
        self.n, self.seed, self.epoch, self.cursor = n, seed, epoch, cursor

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices, running into the next epoch's permutation when this one ends."""
        out = []
        while len(out) < count:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            chunk = order[self.cursor : self.cursor + count - len(out)]
            out += [int(i) for i in chunk]
            self.cursor += len(chunk)
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}


class MetricsLog:
    """Append-only JSONL metrics, one object per logged step; a resumed run appends to the same file.

    At resume the lines past the checkpoint (written by the killed run after its last save) are dropped by
    writing a new file and renaming it over the old one, so a kill during the rewrite loses nothing. A torn
    last line (a write cut short by a kill or a full disk) is dropped with a warning; a broken line before
    it is an error naming ``file:line``.
    """

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume_step:
            kept = [line for line, record in self._records() if record["step"] <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif self.path.exists():
            self.path.unlink()

    def _records(self) -> list[tuple[str, dict]]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("not a metrics record with an integer 'step'")
            except ValueError as err:
                if number == len(lines):
                    warnings.warn(f"{self.path}:{number}: dropping a torn last line ({err})", stacklevel=3)
                    continue
                raise ValueError(f"{self.path}:{number}: unreadable metrics line ({err}); fix or remove it") from None
            records.append((line, record))
        return records

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return [record for _, record in self._records()] if self.path.exists() else []
