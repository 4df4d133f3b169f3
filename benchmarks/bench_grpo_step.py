"""Seconds per GRPO step and its split (rollout / reward / update), peak memory and image tokens per second.

CPU: the tiny preset (64 px, 16 image tokens). CUDA: the "1b" preset (Janus-Pro-1B dimensions, random
weights, 384 px, 576 image tokens) at the paper's group size 16, bf16, LoRA rank 32, with a rule reward
standing in for the judge (which runs on other devices in a real run). Baseline for the split: the update
share of the step; the issue's goal is under 25 % on an H100 with the whole step inside 80 GB.

    python benchmarks/bench_grpo_step.py [--steps 3] [--prompts 8] [--group 16] [--markdown out.md]
    torchrun --nproc_per_node=N benchmarks/bench_grpo_step.py --fsdp    # FSDP2-sharded, N ranks
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import numpy as np
import torch

from gotr1.demo.synthetic import synthetic_samples
from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.policy.model import random_janus
from gotr1.train.distributed import join_process_group, leave_process_group, local_device, rank_and_world


def length_reward(prompts, chains, images, judge=None):
    """A cheap reward that varies inside each group, so the update has real advantages."""
    return np.array([(len(c.text) % 13) / 12 for c in chains], dtype=np.float32), {}


def make_trainer(preset: str, image_size: int, prompts_per_step: int, group: int, chain_tokens: int,
                 max_steps: int, fsdp: bool = False) -> GRPOTrainer:
    """A GRPO trainer on a random-weight ``preset`` policy with ``length_reward``; CUDA settings when present."""
    cuda = torch.cuda.is_available()
    model, processor = random_janus(preset, image_size=image_size, device=local_device(),
                                    dtype=torch.bfloat16 if cuda else None)
    config = GRPOConfig(prompts_per_step=prompts_per_step, group_size=group, max_chain_tokens=chain_tokens,
                        max_steps=max_steps, micro_batch_size=8 if cuda else 4, progress=False,
                        sample_every=0, save_every=10_000,
                        output_dir=tempfile.mkdtemp(prefix="gotr1-bench-grpo-step-"),  # each trainer its own run folder
                        gradient_checkpointing=cuda, cuda_graph=cuda, fsdp=fsdp)
    prompts = [s.prompt for s in synthetic_samples(64, seed=0)]
    return GRPOTrainer(model, processor, {"length": length_reward}, config, prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default 8 on CUDA, 2 on CPU)")
    parser.add_argument("--group", type=int, default=None, help="samples per prompt (default 16 on CUDA, 4 on CPU)")
    parser.add_argument("--chain-tokens", type=int, default=None, help="chain cap (default 128 on CUDA, 32 on CPU)")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (run under torchrun)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    join_process_group()
    rank, world = rank_and_world()

    cuda = torch.cuda.is_available()
    preset, image_size = ("1b", 384) if cuda else ("tiny", 64)
    prompts_per_step = args.prompts or (8 if cuda else 2)
    group = args.group or (16 if cuda else 4)
    chain_tokens = args.chain_tokens or (128 if cuda else 32)
    trainer = make_trainer(preset, image_size, prompts_per_step, group, chain_tokens, args.steps + 1, args.fsdp)
    trainer.train_step()  # warm-up: kernels compile, caches allocate
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for _ in range(args.steps):
        start = time.perf_counter()
        metrics = trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
        metrics["seconds"] = time.perf_counter() - start
        steps.append(metrics)
    trainer.close()

    med = {k: statistics.median(m[k] for m in steps) for k in ("seconds", "seconds_rollout", "seconds_reward", "seconds_update")}
    rows = prompts_per_step * group
    image_tokens = rows * (image_size // 16) ** 2
    peak = (torch.cuda.max_memory_allocated() / 2**30) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    name = torch.cuda.get_device_name() if cuda else "CPU"
    layout = f"FSDP2 over {world} rank(s)" if args.fsdp else f"{world} rank(s), replicated"
    table = [
        f"GRPO step, {preset} preset at {image_size} px on {name}, {layout}: {prompts_per_step} prompts x {group} "
        f"samples, chains <= {chain_tokens} tokens, median of {args.steps} steps (peak memory: rank 0)",
        "",
        "| step s | rollout s | reward s | update s | update share | image tokens/s | peak GiB |",
        "|---|---|---|---|---|---|---|",
        f"| {med['seconds']:.2f} | {med['seconds_rollout']:.2f} | {med['seconds_reward']:.3f} | {med['seconds_update']:.2f} "
        f"| {med['seconds_update'] / med['seconds']:.0%} | {image_tokens / med['seconds_rollout']:.0f} "
        f"| {peak:.2f}{'' if cuda else ' (max RSS)'} |",
    ]
    if rank == 0:
        print("\n".join(table))
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write("\n".join(table) + "\n")
    leave_process_group()


if __name__ == "__main__":
    main()
