"""Rewards per second for one rollout batch: batched and concurrent judging vs one request at a time.

Two judges, each scored both ways in the same run on the same batch (64 samples, 2-3 objects per chain,
so 5-6 judge requests per sample: R_sem, R_spa, one R_RI grounding per object, R_PI):

- the tiny random Qwen2.5-VL (``tiny_judge``; on CUDA when available, else CPU): ``score_batch`` sends every
  request in one ``chat`` call, generated in batches of 64, against one ``generate`` per request;
- ``OpenAIJudge`` against a local fake server (its own process, so it does not share the client's GIL)
  with a fixed latency per request: 16 requests in flight against one at a time.

No cache is shared between runs, so every request reaches the judge. Prints a Markdown table.

    python benchmarks/bench_rewards.py            # 3 repeats, 20 ms server latency
    python benchmarks/bench_rewards.py --quick    # 1 repeat, 5 ms latency, 16 samples for the tiny judge
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from gotr1.chain import Box, ChainObject, format_chain
from gotr1.rewards import OpenAIJudge, score_batch, tiny_judge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake judge server is a test stand-in
from fake_judge_server import FakeOpenAIServer  # noqa: E402

NOUNS = ["cat", "dog", "red apple", "blue vase", "green bench", "bicycle", "lamp", "yellow cup", "horse", "clock"]
RELATIONS = ["on the left of", "on the right of", "on the top of", "next to", "below"]


class OneAtATime:
    """The baseline: the same judge asked one request per ``chat`` call, sequentially."""

    def __init__(self, judge):
        self.judge = judge

    def grounding_size(self, width, height):
        return self.judge.grounding_size(width, height)

    def chat(self, requests):
        return [self.judge.chat([r])[0] for r in requests]


def _serve(latency: float, urls) -> None:
    with FakeOpenAIServer(latency=latency) as server:
        urls.put(server.url("good"))
        threading.Event().wait()  # until the parent terminates this process


def rollout(n: int, seed: int = 0):
    """``n`` prompts, chains with 2-3 boxed objects, and random 384 x 384 images of 16 x 16 patches."""
    rng = np.random.default_rng(seed)
    prompts, chains = [], []
    for i in range(n):
        a, b, c = rng.choice(NOUNS, size=3, replace=False)
        prompts.append(f"a {a} {RELATIONS[i % len(RELATIONS)]} a {b}")
        names = [a, b] + ([c] if i % 2 else [])
        objects = []
        for name in names:
            x1, y1 = (int(v) for v in rng.integers(0, 600, size=2))
            w, h = (int(v) for v in rng.integers(100, 400, size=2))
            objects.append(ChainObject(str(name), Box(x1, y1, x1 + w, y1 + h)))
        chains.append(format_chain(objects, text=f"A picture of a {a} and a {b}, in a tidy scene."))
    # One colour per 16 x 16 patch, like a VQ image's 24 x 24 tokens: PNG sizes between noise and flat colour.
    patches = rng.integers(0, 256, size=(n, 24, 24, 3), dtype=np.uint8)
    images = np.ascontiguousarray(patches.repeat(16, axis=1).repeat(16, axis=2))
    return prompts, chains, images


def measure(judge, batch, repeats: int) -> tuple[float, int]:
    """Median seconds to score ``batch`` and the number of judge requests it took."""
    times, requests = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = score_batch(*batch, judge)
        times.append(time.perf_counter() - start)
        requests = result.details["requests"]
    return statistics.median(times), requests


def row(judge_name: str, mode: str, n: int, seconds: float, requests: int, baseline: float | None) -> str:
    speedup = f"{baseline / seconds:.1f}x" if baseline else "1.0x"
    return f"| {judge_name} | {mode} | {n} | {requests} | {seconds:.3f} | {n / seconds:.1f} | {speedup} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: 1 repeat, fewer samples for the tiny judge")
    parser.add_argument("--samples", type=int, default=64, help="rollout batch size (default 64)")
    parser.add_argument("--latency", type=float, default=None, help="fake server latency in seconds")
    parser.add_argument("--concurrency", type=int, default=16, help="OpenAIJudge requests in flight")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 on a busy shared machine)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    latency = args.latency if args.latency is not None else (0.005 if args.quick else 0.02)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"machine: {platform.node()} ({machine}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads)\n")
    print("| judge | mode | samples | requests | median s | rewards/s | speedup |")
    print("|---|---|---|---|---|---|---|")

    tiny_samples = min(args.samples, 16) if args.quick and device == "cpu" else args.samples
    batch = rollout(tiny_samples)
    judge = tiny_judge(seed=0, max_new_tokens=16, batch_size=64)
    judge.model.to(device, torch.bfloat16 if device == "cuda" else torch.float32)  # as TransformersJudge loads
    score_batch(*(x[:2] for x in batch), judge)  # warm-up: first-call allocations and kernel selection
    base, requests = measure(OneAtATime(judge), batch, repeats)
    print(row(f"tiny Qwen2.5-VL ({device})", "one request at a time", tiny_samples, base, requests, None))
    fast, requests = measure(judge, batch, repeats)
    print(row(f"tiny Qwen2.5-VL ({device})", "batched (64 per generate)", tiny_samples, fast, requests, base))

    batch = rollout(args.samples)
    context = multiprocessing.get_context("spawn")
    urls = context.Queue()
    server = context.Process(target=_serve, args=(latency, urls), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=60)
        name = f"OpenAIJudge, fake server {latency * 1000:.0f} ms"
        with OpenAIJudge(url, model="fake", concurrency=1, timeout=10) as sequential:
            base, requests = measure(OneAtATime(sequential), batch, repeats)
        print(row(name, "one request at a time", args.samples, base, requests, None))
        with OpenAIJudge(url, model="fake", concurrency=args.concurrency, timeout=10) as concurrent:
            fast, requests = measure(concurrent, batch, repeats)
        print(row(name, f"concurrent ({args.concurrency} in flight)", args.samples, fast, requests, base))
    finally:
        server.terminate()
        server.join()
        urls.close()


if __name__ == "__main__":
    main()
