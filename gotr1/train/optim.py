"""What a trainer optimises: the trainable policy (LoRA or full fine-tuning) and AdamW with a warm-up then
cosine schedule, shared by SFT and GRPO."""

from __future__ import annotations

import math

import torch

from gotr1.policy.lora import apply_lora
from gotr1.policy.model import janus_parts


def prepare_policy(model, processor, config):
    """The trainable policy of a :class:`~gotr1.train.config.TrainingConfig`: LoRA-wrapped or fully trainable
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
