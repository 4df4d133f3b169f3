"""Rollout: GoT generation (chains, then image tokens with CFG) by gotr1, by transformers ``generate`` and by
GoT-R1's reference two-phase loop, at ``bench_generate.py``'s sizes: 8 prompts x 4 samples, chains of 32
tokens, the tiny preset at 64 px in float32 on the CPU; the 1b preset at 384 px in bf16 on CUDA.

Each case records ``items`` (images generated): the reference loop, one image at a time, makes 8 on the CPU
and one on CUDA (to stay short), and ``report.py`` compares seconds per image.
"""

from __future__ import annotations

import pytest
import torch
from bench_generate import PROMPTS, _warm_up, run_gotr1, run_reference, run_transformers
from suite import CUDA, NO_CUDA, record

from gotr1.policy.model import num_image_tokens, random_janus

SAMPLES, CHAIN_TOKENS = 4, 32
REFERENCE_IMAGES = {"cpu": 8, "cuda": 1}
BASELINES = ["transformers generate", "reference loop"]
SECTIONS = {"cpu": ("tiny", 64, torch.float32), "cuda": ("1b", 384, torch.bfloat16)}
IMPLS = ["gotr1", "gotr1 (CUDA graphs)", *BASELINES]


@pytest.fixture(scope="module", params=list(SECTIONS))
def policy(request):
    """(device, model, processor) of one section, warmed up; the CUDA section skips without a GPU."""
    if request.param == "cuda" and not CUDA:
        pytest.skip(NO_CUDA)
    preset, image_size, dtype = SECTIONS[request.param]
    device = torch.device(request.param)
    model, processor = random_janus(preset, image_size=image_size, seed=0, dtype=dtype, device=device)
    with torch.no_grad():
        _warm_up(model, processor, PROMPTS, SAMPLES, device)
    return device, model, processor


@pytest.mark.benchmark(group="generation")
@pytest.mark.parametrize("impl", IMPLS)
def test_generation(benchmark, policy, impl):
    device, model, processor = policy
    rows = len(PROMPTS) * SAMPLES
    images = REFERENCE_IMAGES[device.type] if impl == "reference loop" else rows
    args = (model, processor, PROMPTS, SAMPLES, CHAIN_TOKENS, device)
    runs = {
        "gotr1": lambda: run_gotr1(*args, cuda_graph=False),
        "gotr1 (CUDA graphs)": lambda: run_gotr1(*args, cuda_graph=True),
        "transformers generate": lambda: run_transformers(*args),
        "reference loop": lambda: run_reference(*args, images),
    }
    if impl == "gotr1 (CUDA graphs)" and device.type != "cuda":
        pytest.skip(NO_CUDA)
    steps = num_image_tokens(model)
    record(benchmark, impl, BASELINES, (len(PROMPTS), SAMPLES, CHAIN_TOKENS, steps), device.type, items=images,
           image_tokens=images * steps)
    rounds = 2 if device.type == "cuda" else 3
    with torch.no_grad():
        result = benchmark.pedantic(runs[impl], rounds=rounds, iterations=1)
    assert result[2] == images
