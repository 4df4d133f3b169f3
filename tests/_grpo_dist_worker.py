"""Run by the distributed tests of test_grpo.py under torchrun with gloo: ``python -m torch.distributed.run
--nproc_per_node=2 _grpo_dist_worker.py MODE OUT``.

``replicated``: two LoRA GRPO steps with every rank holding the whole model; each rank saves its trainable
weights to ``OUT/rank<r>.pt`` and what its ``train()`` returned to ``OUT/rank<r>.json``.

``fsdp``: full fine-tuning with a KL reference (the 7B recipe) three ways, starting from the same weights:
replicated, FSDP-sharded (a checkpoint each step), and FSDP resumed from the sharded run's first
checkpoint; and LoRA with a KL reference (adapters disabled), replicated, sharded, and sharded resumed.
Rank 0 saves the whole trained weights of each to ``OUT/<run>.pt``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.policy.model import tiny_janus
from gotr1.policy.sharding import full_tensor, is_sharded

PROMPTS = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square"]


def length_reward(prompts, chains, images, judge=None):
    return np.array([(len(c.text) % 13) / 12 for c in chains], dtype=np.float32), {}


def train(out_dir: Path, history: list | None = None, **overrides) -> dict:
    """Two GRPO steps from tiny_janus(seed=0); the whole trainable weights afterwards (on every rank).
    ``history`` receives what ``train()`` returned."""
    torch.manual_seed(0)
    config = GRPOConfig(output_dir=str(out_dir), prompts_per_step=2, group_size=3, max_chain_tokens=10, max_steps=2,
                        micro_batch_size=2, lr=5e-3, lora_rank=4, progress=False, sample_every=0, **overrides)
    trainer = GRPOTrainer(*tiny_janus(seed=0), {"length": length_reward}, config, PROMPTS)
    assert is_sharded(trainer.model) == config.fsdp
    returned = trainer.train()
    trainer.close()
    if history is not None:
        history.extend(returned)
    return {n: full_tensor(p.detach()).clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def main(mode: str, out: str) -> None:
    dist.init_process_group("gloo")
    out = Path(out)
    rank = dist.get_rank()
    if mode == "replicated":
        history = []
        torch.save(train(out, history), out / f"rank{rank}.pt")
        (out / f"rank{rank}.json").write_text(json.dumps(history))
    else:
        full = dict(use_lora=False, beta=0.04, save_every=1, keep_last=None)
        runs = {"replicated": train(out / "replicated", **full),
                "fsdp": train(out / "fsdp", fsdp=True, **full),
                "resumed": train(out / "resumed", fsdp=True, resume_from=str(out / "fsdp" / "step-0000001"), **full),
                "lora_replicated": train(out / "lora_replicated", beta=0.04),
                "lora_fsdp": train(out / "lora_fsdp", beta=0.04, fsdp=True, save_every=1, keep_last=None),
                "lora_resumed": train(out / "lora_resumed", beta=0.04, fsdp=True,
                                      resume_from=str(out / "lora_fsdp" / "step-0000001"))}
        if rank == 0:
            for name, weights in runs.items():
                torch.save(weights, out / f"{name}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
