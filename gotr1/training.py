"""Pieces every gotr1 trainer shares: policy preparation, AdamW + warm-up/cosine schedule, weight
restoring for resume, and the per-step metrics log."""

from __future__ import annotations

import json
import math
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


def load_model_weights(model, folder: str | Path) -> None:
    """Load what :func:`gotr1.checkpoint.save_checkpoint` saved of ``model`` (adapter or full weights)."""
    folder = Path(folder)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state = {}
    for file in files:
        state.update(load_file(file))
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
    """Append-only JSONL metrics, one object per logged step; a resumed run appends to the same file."""

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume_step:
            # Lines past the checkpoint were written by the killed run after its last save: drop them.
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line] if self.path.exists() else []
