"""One GRPO step (rollout, reward, update) as ``bench_grpo_step.py`` runs it: the tiny preset at 64 px,
2 prompts x 4 samples, chains <= 32 tokens on the CPU; the 1b preset at 384 px, 8 x 16, 128 tokens on CUDA.

The step is its own baseline; ``extra_info`` holds the median split (rollout, reward, update seconds).
"""

from __future__ import annotations

import statistics

import pytest
from bench_grpo_step import make_trainer
from suite import CUDA, DEVICE, record

PRESET, IMAGE_SIZE, PROMPTS, GROUP, CHAIN_TOKENS = ("1b", 384, 8, 16, 128) if CUDA else ("tiny", 64, 2, 4, 32)
ROUNDS = 2 if CUDA else 3
CASE = f"gotr1 GRPO step ({PRESET} preset)"


@pytest.mark.benchmark(group="grpo_step")
def test_grpo_step(benchmark):
    trainer = make_trainer(PRESET, IMAGE_SIZE, PROMPTS, GROUP, CHAIN_TOKENS, max_steps=ROUNDS + 2)
    metrics = []
    try:
        trainer.train_step()  # warm-up: kernels compile, caches allocate
        benchmark.pedantic(lambda: metrics.append(trainer.train_step()), rounds=ROUNDS, iterations=1)
    finally:
        trainer.close()
    split = {k: statistics.median(m[k] for m in metrics) for k in ("seconds_rollout", "seconds_reward", "seconds_update")}
    record(benchmark, CASE, CASE, (PROMPTS, GROUP, CHAIN_TOKENS, (IMAGE_SIZE // 16) ** 2), DEVICE,
           items=PROMPTS * GROUP, **split)
