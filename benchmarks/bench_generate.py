"""Rollout throughput: image tokens per second of GoT generation, gotr1 vs transformers vs GoT-R1's loop.

Workload: 8 prompts x 4 samples (a GRPO batch), each a chain capped at ``--chain-tokens`` then the image
tokens with CFG (guidance 5, temperature 1, no top-k/p), random weights. Three implementations:

* **gotr1**: :func:`gotr1.rollout.chains.generate_chains` + :func:`gotr1.rollout.images.generate_images` (all rows in one
  batch, the chain's KV cache reused, fused sampling; on CUDA with and without CUDA graphs);
* **transformers**: ``model.generate`` for the chains (batched, ``min_new_tokens`` = the cap so every row
  is full-length, as random weights almost never stop anyway), then
  ``model.generate(..., generation_mode="image")`` on prompt + chain + ``<begin_of_image>``;
* **reference loop**: a re-implementation of GoT-R1's public inference: one chain at a time (batch 1,
  dynamic cache), the cache thrown away, prompt + chain re-prefilled as a [cond, uncond] pair, 576 eager
  steps of CFG + softmax + multinomial. It generates one image at a time, so its throughput is measured
  on ``--ref-images`` of them.

Sections: on the CPU the ``"1b-lite"`` preset (Janus-Pro-1B's layer shapes, 102400 / 16384 vocabularies and
576 image tokens at 384 px, two decoder layers), or ``--cpu-preset tiny`` for the 64-px toy (skip with
``--skip-cpu``); the ``"1b"`` preset
(Janus-Pro-1B dimensions) at 384 px in bf16 on CUDA when a GPU is present (or what ``--preset`` /
``--image-size`` ask for). On CUDA gotr1 is timed twice (median) and the reference loop on one image, to
stay near two minutes. Each section also reports gotr1's time per image decode step (CUDA graphs,
captures included) against two floors from a measured copy bandwidth: the decode weights (language model
+ generation head, read once per step) and those weights plus the KV cache a step reads (2B rows x mean
attended slots). On the CPU, sampling runs ``gotr1.kernels.sampling``'s torch reference (the Triton
kernel needs CUDA or the interpreter), which dominates the tiny model's chain phase.

Run: ``python benchmarks/bench_generate.py [--quick] [--threads N] [--markdown FILE]``; the tables are
printed (and appended to FILE) in Markdown, progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from transformers import DynamicCache, StaticCache

from gotr1.kernels.sampling import sample
from gotr1.policy.model import cache_keyword, got_token_ids, num_image_tokens, random_janus
from gotr1.policy.tokens import format_prompt
from gotr1.rollout import Sampling, generate_chains, generate_images
from gotr1.rollout.kv_cache import slot_bytes

PROMPTS = [
    "a red apple on the left of a blue car",
    "two cats sitting on a wooden bench",
    "a glass vase next to a leather bag",
    "a fluffy dog below a round clock",
    "a green bench and a red car",
    "a metallic spoon in a white bowl",
    "a bird above a tall tree near the mountain",
    "a yellow book on top of a black table",
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The three implementations; each returns (chain seconds, image seconds, images generated)
# ---------------------------------------------------------------------------------------------


def run_gotr1(model, processor, prompts, samples, cap, device, cuda_graph):
    chains, chain_s = _timed(
        lambda: generate_chains(model, processor, prompts, samples, Sampling(max_chain_tokens=cap, seed=0)), device
    )
    width = chains.cache.length  # slots before the first image token (prompt + chain)
    _, image_s = _timed(lambda: generate_images(model, processor, chains, cuda_graph=cuda_graph), device)
    return chain_s, image_s, len(chains), width


def run_transformers(model, processor, prompts, samples, cap, device):
    ids = got_token_ids(processor)
    tokenizer = processor.tokenizer
    encoded = [[ids.bos] + tokenizer(format_prompt(p), add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    prompt_ids = torch.tensor([[ids.pad] * (width - len(e)) + e for e in encoded], device=device)
    prompt_mask = (torch.arange(width, device=device)[None] >= torch.tensor([width - len(e) for e in encoded], device=device)[:, None]).long()
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    sequences, chain_s = _timed(
        lambda: model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=cap,
            min_new_tokens=cap,
            num_return_sequences=samples,
            eos_token_id=ids.boi,
            pad_token_id=ids.pad,
            **sampling,
        ),
        device,
    )
    rows = sequences.shape[0]
    image_input = torch.cat([sequences, torch.full((rows, 1), ids.boi, device=device)], dim=1)
    mask = torch.cat([prompt_mask.repeat_interleave(samples, 0), torch.ones(rows, cap + 1, device=device, dtype=torch.long)], 1)
    # A cache of our own: transformers 5.17's image-mode generate fails to build its default one.
    cache = StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=image_input.shape[1] + num_image_tokens(model))
    _, image_s = _timed(
        lambda: model.generate(
            image_input,
            attention_mask=mask,
            generation_mode="image",
            guidance_scale=5.0,
            **{cache_keyword(model): cache},
            **sampling,
        ),
        device,
    )
    return chain_s, image_s, rows


@torch.no_grad()
def run_reference(model, processor, prompts, samples, cap, device, images, guidance=5.0, temperature=1.0):
    """GoT-R1's two-phase inference loop, one (prompt, sample) at a time."""
    ids = got_token_ids(processor)
    tokenizer = processor.tokenizer
    lm, head, gen_head = model.model.language_model, model.lm_head, model.model.generation_head
    embed = model.get_input_embeddings()
    cache_kw = cache_keyword(model)
    steps = num_image_tokens(model)
    jobs = [p for p in prompts for _ in range(samples)][:images]
    chain_s = image_s = 0.0
    for prompt in jobs:
        _sync(device)
        t0 = time.perf_counter()
        input_ids = torch.tensor([[ids.bos] + tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]], device=device)
        cache, inputs, chain = DynamicCache(), embed(input_ids), []
        next_token = None
        while next_token != ids.boi and len(chain) < cap:
            hidden = lm(inputs_embeds=inputs, use_cache=True, **{cache_kw: cache}).last_hidden_state
            probs = torch.softmax(head(hidden[:, -1]).float() / temperature, dim=-1)
            token = torch.multinomial(probs, num_samples=1)
            inputs = embed(token)
            next_token = int(token)
            chain.append(next_token)
        if chain[-1] != ids.boi:
            chain.append(ids.boi)
        _sync(device)
        t1 = time.perf_counter()
        full = torch.cat([input_ids[0], torch.tensor(chain, device=device)])
        tokens = full.repeat(2, 1)
        tokens[1, 1:-1] = ids.pad
        cache, inputs = DynamicCache(), embed(tokens)
        for _ in range(steps):
            hidden = lm(inputs_embeds=inputs, use_cache=True, **{cache_kw: cache}).last_hidden_state
            logits = gen_head(hidden[:, -1]).float()
            cond, uncond = logits[0::2], logits[1::2]
            probs = torch.softmax((uncond + guidance * (cond - uncond)) / temperature, dim=-1)
            token = torch.multinomial(probs, num_samples=1)
            inputs = model.prepare_embeddings_for_image_generation(torch.cat([token, token]).view(-1))[:, None]
        _sync(device)
        chain_s += t1 - t0
        image_s += time.perf_counter() - t1
    return chain_s, image_s, len(jobs)


# ---------------------------------------------------------------------------------------------
# Floors
# ---------------------------------------------------------------------------------------------


def copy_bandwidth(device) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    n = (1 << 30) if device.type == "cuda" else (1 << 27)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = [_timed(lambda: dst.copy_(src), device)[1] for _ in range(5)]
    return 2 * n / statistics.median(times)


def decode_bytes(model) -> int:
    """Weight bytes an image decode step reads: the language model (minus the embedding table) and the image head."""
    parts = [model.model.language_model, model.model.generation_head, model.model.generation_aligner]
    total = sum(p.numel() * p.element_size() for part in parts for p in part.parameters())
    emb = model.model.language_model.embed_tokens.weight
    return total - emb.numel() * emb.element_size()


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    """Progress on stderr, so a run cut short by a time limit still shows what it measured."""
    print(f"[bench_generate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _warm_up(model, processor, prompts, samples, device):
    """Compile the sampling kernel for both phases' shapes and warm the GEMMs, outside the timings."""
    generate_chains(model, processor, prompts, samples, Sampling(max_chain_tokens=2))
    rows, codebook = len(prompts) * samples, model.config.vq_config.num_embeddings
    logits = torch.zeros(rows, codebook, device=device, dtype=model.lm_head.weight.dtype)
    step = torch.zeros(1, dtype=torch.long, device=device)
    sample(logits, logits, guidance=5.0, seed=0, step=step, logprob_of="cond")
    _sync(device)


def section(preset, image_size, device, dtype, args):
    t0 = time.perf_counter()
    model, processor = random_janus(preset, image_size=image_size, seed=0, dtype=dtype, device=device)
    prompts, samples, cap = PROMPTS[: args.prompts], args.samples, args.chain_tokens
    repeats = args.repeats or (2 if device.type == "cuda" else 3)
    steps = num_image_tokens(model)
    rows = len(prompts) * samples
    _warm_up(model, processor, prompts, samples, device)
    _log(f"{preset} on {device.type}: model built and warmed up in {time.perf_counter() - t0:.1f}s")
    variants = [("gotr1 (CUDA graphs)", True), ("gotr1 (eager)", False)] if device.type == "cuda" else [("gotr1", False)]
    results = {}
    for name, graph in variants:
        runs = [run_gotr1(model, processor, prompts, samples, cap, device, graph) for _ in range(repeats)]
        results[name] = tuple(statistics.median(r[i] for r in runs) for i in range(2)) + (rows,)
        width = runs[0][3]
        _log(f"{name}: chains {results[name][0]:.2f}s, images {results[name][1]:.2f}s")
    ref_images = args.ref_images or (1 if device.type == "cuda" else rows)
    results["reference loop"] = run_reference(model, processor, prompts, samples, cap, device, ref_images)
    _log(f"reference loop: chains {results['reference loop'][0]:.2f}s, images {results['reference loop'][1]:.2f}s")
    if not args.skip_transformers:
        results["transformers generate"] = run_transformers(model, processor, prompts, samples, cap, device)
        _log(f"transformers: chains {results['transformers generate'][0]:.2f}s, images {results['transformers generate'][1]:.2f}s")

    label = f"{preset} @ {image_size}px, {device.type} ({_device_name(device)}), {str(dtype).replace('torch.', '')}"
    lines = [
        f"### bench_generate: {label}",
        f"{len(prompts)} prompts x {samples} samples, chains capped at {cap} tokens, {steps} image tokens, "
        f"guidance 5; gotr1 median of {repeats}; reference loop on {ref_images} image(s)",
        "",
        "| implementation | image tok/s (chain+image) | image tok/s (image phase) | ms / image step | x transformers | x reference |",
        "|---|---|---|---|---|---|",
    ]
    speed = {name: n * steps / (c + i) for name, (c, i, n) in results.items()}
    for name, (chain_s, image_s, n) in results.items():
        # A batched step advances every row; the reference loop steps one [cond, uncond] pair at a time.
        step_ms = 1e3 * image_s / steps / (n if name == "reference loop" else 1)
        ratios = [f"{speed[name] / speed[base]:.1f}" if base in speed else "-" for base in ("transformers generate", "reference loop")]
        lines.append(f"| {name} | {speed[name]:.0f} | {n * steps / image_s:.0f} | {step_ms:.2f} | {' | '.join(ratios)} |")
    lines += _floor_lines(model, results[variants[0][0]][1], steps, rows, width, device)
    return "\n".join(lines)


def _floor_lines(model, image_s, steps, rows, width, device):
    """Per-step time against the bytes a step must read: weights, and weights + the slots attention reads."""
    bandwidth = copy_bandwidth(device)
    weights = decode_bytes(model)
    per_slot = slot_bytes(model.config.text_config, model.lm_head.weight.dtype)
    kv = 2 * rows * (width + steps / 2) * per_slot  # CFG rows x mean span of an eager step
    step_ms = 1e3 * image_s / steps
    weight_ms, total_ms = 1e3 * weights / bandwidth, 1e3 * (weights + kv) / bandwidth
    return [
        "",
        f"copy bandwidth {bandwidth / 1e9:.0f} GB/s; decode weights {weights / 1e9:.2f} GB; "
        f"KV read per step ~{kv / 1e9:.2f} GB ({2 * rows} rows)",
        "",
        "| per image step | ms | step / floor |",
        "|---|---|---|",
        f"| gotr1 measured | {step_ms:.2f} | - |",
        f"| floor: weights only | {weight_ms:.2f} | {step_ms / weight_ms:.2f} |",
        f"| floor: weights + KV cache | {total_ms:.2f} | {step_ms / total_ms:.2f} |",
    ]


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.node()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="GPU section preset (default 1b)")
    parser.add_argument("--image-size", type=int, default=None, help="GPU section image size (default 384)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--chain-tokens", type=int, default=32, help="chain cap (Sampling.max_chain_tokens)")
    parser.add_argument("--repeats", type=int, default=0, help="timed gotr1 runs (0: 3 on CPU, 2 on CUDA)")
    parser.add_argument("--ref-images", type=int, default=0, help="images for the reference loop (0: all on CPU, 2 on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA section")
    parser.add_argument("--skip-cpu", action="store_true", help="skip the CPU section (when CUDA is present)")
    parser.add_argument("--cpu-preset", default="1b-lite", help="CPU section preset (default 1b-lite; tiny: the 64-px toy)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 prompts x 2 samples, 16-token chains")
    parser.add_argument("--markdown", default=None, help="also append the tables to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.prompts, args.samples, args.chain_tokens = 1, 2, 2, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    def emit(table: str) -> None:
        """Print and append a section's table as soon as it is measured: a run cut short keeps what it had."""
        print(table, flush=True)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write(table + "\n\n")

    with torch.no_grad():
        has_cuda = torch.cuda.is_available() and not args.cpu_only
        if not (args.skip_cpu and has_cuda):
            emit(section(args.cpu_preset, 64 if args.cpu_preset == "tiny" else 384, torch.device("cpu"), torch.float32,
                         args))
        if has_cuda:
            emit(section(args.preset or "1b", args.image_size or 384, torch.device("cuda"), torch.bfloat16, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
