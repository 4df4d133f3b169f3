"""Benchmark of one decode step's sampling: gotr1's fused kernel vs the eager torch sequence.

Cases (bf16 logits, as the heads produce them):

* image: 16 images with CFG, i.e. B = 32 rows (16 cond + 16 uncond) over the V = 16384 codebook, s = 5, T = 1,
  plain multinomial (Janus-Pro's setting), log-prob of the conditional branch (GRPO's default);
* chain: B = 64 rows over the V = 102400 text vocabulary with top-p = 0.9.

Eager baseline: mix ``u + s * (c - u)``, divide by T, softmax, sort-based top-p (sort, cumsum, mask,
scatter, renormalise), ``torch.multinomial``, gather and log of the chosen probability: what public
text-to-image RL code runs per step. Reported: median device time (CUDA events, the host kept ahead so launch
overhead is hidden as in a full decode queue), median wall time of a synchronised call, their ratios, and
gotr1's achieved read bandwidth over the logits.

On CUDA it also checks that a Janus-Pro-1B-sized image step - hidden [32, 2048] -> gen-head-sized linear
(2048 -> 16384) -> ``sample`` with CFG - captures in a ``torch.cuda.CUDAGraph`` and that replays (with the step
counter advanced on the device) equal eager calls.

On a machine without CUDA, ``sample`` dispatches to its torch reference (Triton is not compiled there): the
CPU table compares that reference with the eager sequence on the same cases, fewer repetitions.

Run: ``python benchmarks/bench_sampling.py [--quick] [--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gotr1.kernels.sampling import sample

CASES = [  # name, rows B, vocabulary V, CFG, sample() keyword arguments
    ("image: 16 imgs x CFG, V=16384", 32, 16384, True, dict(guidance=5.0, logprob_of="cond")),
    ("chain: B=64, V=102400, top-p 0.9", 64, 102400, False, dict(top_p=0.9)),
]


def eager_step(cond, uncond, guidance=1.0, temperature=1.0, top_p=None, logprob_of="mixed", generator=None):
    """The eager sequence gotr1 replaces: returns (ids int64 [B], logp float32 [B])."""
    logits = cond.float()
    if uncond is not None:
        logits = uncond.float() + guidance * (logits - uncond.float())
    logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        cut = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(cut, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    ids = torch.multinomial(probs, 1, generator=generator)
    if logprob_of == "cond":
        return ids[:, 0], torch.log_softmax(cond.float() / temperature, -1).gather(-1, ids)[:, 0]
    return ids[:, 0], probs.gather(-1, ids)[:, 0].log()


def median_ms(fn, device, reps):
    """(median device ms, median synchronised wall ms) of ``fn()`` after warm-up."""
    for _ in range(3):
        fn()
    wall = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3)
    if device.type != "cuda":
        return statistics.median(wall), statistics.median(wall)
    events = []
    for _ in range(reps):
        torch.cuda._sleep(200_000)  # keep the host ahead: device time without launch gaps
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events), statistics.median(wall)


def bench_case(name, rows, vocab, cfg, kwargs, device, reps):
    """One table row: eager and gotr1 medians, ratios and gotr1's read bandwidth."""
    n_images = rows // 2 if cfg else rows
    cond = (torch.randn(n_images, vocab, device=device) * 2.0).bfloat16()
    uncond = (torch.randn(n_images, vocab, device=device) * 2.0).bfloat16() if cfg else None
    gen = torch.Generator(device=device).manual_seed(0)
    step = iter(range(10**9))
    eager_dev, eager_wall = median_ms(lambda: eager_step(cond, uncond, generator=gen, **kwargs), device, reps)
    ours_dev, ours_wall = median_ms(lambda: sample(cond, uncond, seed=0, step=next(step), **kwargs), device, reps)
    gbps = rows * vocab * 2 / (ours_dev * 1e-3) / 1e9
    return (f"| {name} | {eager_dev:.3f} | {ours_dev:.3f} | {eager_dev / ours_dev:.1f}x | {eager_wall:.3f} | "
            f"{ours_wall:.3f} | {eager_wall / ours_wall:.1f}x | {gbps:.1f} |")


def graph_check(device):
    """Capture hidden -> 2048x16384 linear -> sample (CFG, device step counter); replays must equal eager."""
    hidden = torch.randn(32, 2048, device=device, dtype=torch.bfloat16)
    head = torch.nn.Linear(2048, 16384, bias=False, device=device, dtype=torch.bfloat16)
    step = torch.zeros(1, dtype=torch.int64, device=device)

    def decode_step():
        logits = head(hidden)  # Janus interleaves the doubled batch: even rows cond, odd rows uncond
        return sample(logits[0::2], logits[1::2], guidance=5.0, seed=1234, step=step, logprob_of="cond")

    with torch.no_grad():
        decode_step()  # compile outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ids, logp = decode_step()
        same = True
        for value in range(3):
            step.fill_(value)
            graph.replay()
            eager_ids, eager_logp = decode_step()
            same &= torch.equal(ids, eager_ids) and torch.equal(logp, eager_logp)
        replay_ms, _ = median_ms(graph.replay, device, 50)
        eager_ms, _ = median_ms(decode_step, device, 50)
    return (f"CUDA graph of a Janus-Pro-1B image step (hidden [32, 2048] -> linear 2048x16384 -> sample, CFG): "
            f"captured, replays equal eager: {same}; replay {replay_ms:.3f} ms vs eager {eager_ms:.3f} ms"), same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reps = (20 if args.quick else 100) if device.type == "cuda" else (3 if args.quick else 10)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (gotr1 = torch reference)"
    lines = [f"### sampling, {machine}, torch {torch.__version__}", "",
             "| case | eager dev ms | gotr1 dev ms | speedup | eager wall ms | gotr1 wall ms | speedup | gotr1 GB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        lines.append(bench_case(*case, device, reps))
        print(lines[-1], flush=True)
    ok = True
    if device.type == "cuda":
        line, ok = graph_check(device)
        lines += ["", line]
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
