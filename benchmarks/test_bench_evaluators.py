"""Evaluators: images scored by each metric batched against one image at a time (``bench_evaluators.py``):
the tiny random-weight configs on 32 random 384 px images on CUDA, 16 on the CPU.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from bench_evaluators import metrics
from suite import CUDA, DEVICE, record, synced

BASELINE = "one image at a time"
IMAGES = 32 if CUDA else 16
LABELS = ["BLIP-VQA (color)", "CLIPScore (non-spatial)", "detector spatial (2D-spatial)", "GenEval (Mask2Former + CLIP)"]


@functools.cache
def workload():
    """The four metrics (built once) and the images."""
    rng = np.random.default_rng(0)
    return metrics("tiny", DEVICE), [rng.integers(0, 256, (384, 384, 3), dtype=np.uint8) for _ in range(IMAGES)]


def one_at_a_time(metric, prompts, images):
    return [metric.score([prompt], [image]) for prompt, image in zip(prompts, images)]


@pytest.mark.benchmark(group="evaluators")
@pytest.mark.parametrize("mode", [BASELINE, "batched"])
@pytest.mark.parametrize("label", LABELS)
def test_evaluator(benchmark, label, mode):
    built, images = workload()
    metric, prompts = built[label]
    prompts = [prompts[i % len(prompts)] for i in range(IMAGES)]
    metric.score(prompts[:2], images[:2])  # warm-up
    run = one_at_a_time if mode == BASELINE else lambda m, p, i: m.score(p, i)
    record(benchmark, mode, BASELINE, (IMAGES, 384, 384, 3), DEVICE, items=IMAGES, variant=label)
    benchmark.pedantic(synced(run, DEVICE), args=(metric, prompts, images), rounds=3, iterations=1)
