"""Run by test_grpo_distributed under torchrun: two GRPO steps with gloo, then each rank saves its weights."""

import sys

import numpy as np
import torch
import torch.distributed as dist

from gotr1.config import GRPOConfig
from gotr1.grpo import GRPOTrainer
from gotr1.model import tiny_janus


def length_reward(prompts, chains, images, judge=None):
    return np.array([(len(c.text) % 13) / 12 for c in chains], dtype=np.float32), {}


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = GRPOConfig(output_dir=out_dir, prompts_per_step=2, group_size=3, max_chain_tokens=10, max_steps=2,
                        micro_batch_size=3, lr=5e-3, lora_rank=4, progress=False, sample_every=0)
    prompts = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square"]
    trainer = GRPOTrainer(*tiny_janus(seed=0), {"length": length_reward}, config, prompts)
    trainer.train()
    trainer.close()
    weights = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    torch.save(weights, f"{out_dir}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
