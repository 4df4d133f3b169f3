"""Rewards: the tiny random Qwen2.5-VL judge scoring a rollout batch (R_sem, R_spa, R_RI per object, R_PI)
in one batched ``chat`` call against one request at a time, as ``bench_rewards.py`` does (8 samples on the
CPU, 64 on CUDA). The OpenAI-compatible judge against the fake server stays in the script.
"""

from __future__ import annotations

import functools

import pytest
import torch
from bench_rewards import OneAtATime, rollout
from suite import CUDA, DEVICE, record, synced

from gotr1.rewards import score_batch, tiny_judge

BASELINE = "one request at a time"
SAMPLES = 64 if CUDA else 8


@functools.cache
def judge_and_batch():
    judge = tiny_judge(seed=0, max_new_tokens=16, batch_size=64)
    judge.model.to(DEVICE, torch.bfloat16 if CUDA else torch.float32)  # as TransformersJudge loads
    batch = rollout(SAMPLES)
    score_batch(*(x[:2] for x in batch), judge)  # warm-up: first-call allocations and kernel selection
    return judge, batch


@pytest.mark.benchmark(group="rewards")
@pytest.mark.parametrize("impl", [BASELINE, "batched (64 per generate)"])
def test_rewards(benchmark, impl):
    judge, batch = judge_and_batch()
    scorer = OneAtATime(judge) if impl == BASELINE else judge
    record(benchmark, impl, BASELINE, (SAMPLES,), DEVICE, items=SAMPLES, judge="tiny Qwen2.5-VL")
    result = benchmark.pedantic(synced(lambda: score_batch(*batch, scorer), DEVICE), rounds=3, iterations=1)
    benchmark.extra_info["requests"] = result.details["requests"]
    assert len(result.total) == SAMPLES
