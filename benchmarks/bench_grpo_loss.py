"""Benchmark of the GRPO loss: gotr1's Triton kernels vs the eager torch reference vs torch.compile(reference).

Cases (forward + backward, bf16 logits, every token valid, beta = 0.04 so every token has a gradient):

* image: B*G in {16, 64, 128} sequences of T = 576 tokens over the V = 16384 image codebook;
* chain: B*G = 16 sequences of T = 600 tokens over the V = 102400 text vocabulary, from logits and, for the
  fused-linear variant, from hidden states (H = 2048) and the head's weight.

Reported per row: median device time (CUDA events, with the host kept ahead of the GPU as in a training
step whose queue is full) and host time (how long Python takes to enqueue the step), peak memory above the
inputs, ratios to eager, achieved bandwidth against the traffic floor (6 bytes per bf16 logit: read once
forward, read once and written once backward) and that bandwidth as a share of a measured device-to-device
copy. The fused-linear row compares with the time of its
three matmuls alone (logits, d hidden, d weight); its LoRA row (the head frozen, the four GoT tag rows trained)
with the fused-linear row, whose ``[V, H]`` weight gradient it does not compute.

On a machine without CUDA only the torch reference runs (Triton is not compiled there), on a small case.

Run: ``python benchmarks/bench_grpo_loss.py [--quick] [--no-compile] [--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gotr1.kernels.grpo_loss import fused_linear_grpo_loss, grpo_loss, grpo_loss_reference

BYTES_PER_LOGIT_FLOOR = 6  # bf16: 2 read forward, 2 read + 2 written backward


def make_inputs(B, T, V, device, dtype=torch.bfloat16):
    logits = (torch.randn(B, T, V, device=device) * 2).to(dtype)
    token_ids = torch.randint(0, V, (B, T), device=device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    advantages = torch.randn(B, device=device)
    with torch.no_grad():
        logp = torch.log_softmax(logits.float(), -1).gather(-1, token_ids[..., None]).squeeze(-1)
    old_logp = logp + 0.2 * torch.randn_like(logp)
    ref_logp = logp + 0.2 * torch.randn_like(logp)
    return logits, dict(token_ids=token_ids, mask=mask, advantages=advantages, old_logp=old_logp, ref_logp=ref_logp)


def fwd_bwd(loss_fn, logits, inputs):
    """A closure running forward + backward of ``loss_fn`` on a leaf view of ``logits``."""
    leaf = logits.detach().requires_grad_()

    def step():
        loss, _ = loss_fn(leaf, **inputs)
        loss.backward()
        leaf.grad = None  # freed inside the step, so peak_mib sees it as the step's own memory

    return step


def time_ms(step, device, quick):
    """Median (device ms, host ms) of ``step`` after warm-up.

    Device time: CUDA events around the step, recorded behind a short GPU sleep so that the host enqueues
    the whole step before the GPU reaches it, as in a training step whose GPU queue is full; host time: how
    long the Python call takes to enqueue it (launch overhead). On CPU both are the wall time.
    """
    reps = 5 if quick else 20
    for _ in range(2):
        step()
    device_ms, host_ms = [], []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda._sleep(10_000_000)  # ~5 ms of GPU head start, outside the timed region
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            step()
            host_ms.append((time.perf_counter() - t0) * 1e3)
            end.record()
            torch.cuda.synchronize()
            device_ms.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            host_ms.append((time.perf_counter() - t0) * 1e3)
            device_ms.append(host_ms[-1])
    return statistics.median(device_ms), statistics.median(host_ms)


def peak_mib(step, device):
    """Peak memory (MiB) allocated by one ``step`` above what was allocated before it; None on CPU."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_bandwidth_gbs():
    """Device-to-device copy bandwidth (bytes read + written per second), the practical ceiling."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = time_ms(lambda: dst.copy_(src), "cuda", quick=False)
    return 2 * src.numel() / ms / 1e6


def bench_logits_case(name, B, T, V, device, args, rows, copy_gbs):
    logits, inputs = make_inputs(B, T, V, device)
    impls = [("eager reference", grpo_loss_reference)]
    if device == "cuda":
        impls.insert(0, ("gotr1", grpo_loss))
        if not args.no_compile:
            impls.append(("torch.compile(ref)", torch.compile(grpo_loss_reference)))
    results = {}
    for impl, fn in impls:
        step = fwd_bwd(fn, logits, inputs)
        results[impl] = (*time_ms(step, device, args.quick), peak_mib(step, device))
        if device == "cuda":
            torch.cuda.empty_cache()
    eager_ms, _, eager_mib = results["eager reference"]
    floor_bytes = BYTES_PER_LOGIT_FLOOR * B * T * V
    for impl, (ms, host_ms, mib) in results.items():
        gbs = floor_bytes / ms / 1e6
        rows.append([name, B, T, V, impl, f"{ms:.2f}", f"{host_ms:.2f}", "n/a" if mib is None else f"{mib:.0f}",
                     f"{eager_ms / ms:.2f}x", "n/a" if mib is None else f"{mib / eager_mib:.2f}",
                     f"{gbs:.3g}", "n/a" if copy_gbs is None else f"{100 * gbs / copy_gbs:.0f}%"])
    if device == "cuda":  # memory of the in-place backward, once (its timing would reuse overwritten logits)
        # Through a view, as logits coming out of a head are a non-leaf: the leaf's grad may then alias them.
        inplace = lambda x, **kw: grpo_loss(x.view_as(x), **kw, inplace_backward=True)  # noqa: E731
        mib = peak_mib(fwd_bwd(inplace, logits.clone(), inputs), device)
        rows.append([name, B, T, V, "gotr1 inplace_backward", "", "", f"{mib:.0f}", "", f"{mib / eager_mib:.2f}",
                     "", ""])
    del logits


def make_linear_inputs(B, T, H, V, device):
    """bf16 hidden states [B, T, H] and head weight [V, H] (both requiring grad) and the loss's other inputs."""
    hidden = torch.randn(B, T, H, device=device, dtype=torch.bfloat16)
    weight = (torch.randn(V, H, device=device) / H**0.5).to(torch.bfloat16)
    token_ids = torch.randint(0, V, (B, T), device=device)
    with torch.no_grad():
        logp = torch.log_softmax((hidden @ weight.t()).float(), -1).gather(-1, token_ids[..., None]).squeeze(-1)
    inputs = dict(token_ids=token_ids, mask=torch.ones(B, T, dtype=torch.bool, device=device),
                  advantages=torch.randn(B, device=device), old_logp=logp + 0.2 * torch.randn_like(logp),
                  ref_logp=logp + 0.2 * torch.randn_like(logp))
    return hidden.requires_grad_(), weight.requires_grad_(), inputs


def bench_fused_linear(B, T, H, V, device, args, rows):
    h, w, inputs = make_linear_inputs(B, T, H, V, device)
    hidden, weight = h.detach(), w.detach()

    def fused():
        fused_linear_grpo_loss(h, w, **inputs)[0].backward()
        h.grad = w.grad = None

    def eager():
        grpo_loss_reference(h @ w.t(), **inputs)[0].backward()
        h.grad = w.grad = None

    # LoRA: the head frozen, only the four GoT tag rows trained (no [V, H] d W; PEFT's merged head would make one).
    row_ids = torch.arange(4, device=device) * (V // 4)
    tag_rows = weight[row_ids].float().requires_grad_()

    def lora_rows():
        fused_linear_grpo_loss(h, weight, **inputs, rows=tag_rows, row_ids=row_ids)[0].backward()
        h.grad = tag_rows.grad = None

    d_logits = torch.randn(B * T, V, device=device, dtype=torch.bfloat16)
    h2 = hidden.detach().reshape(B * T, H)

    def matmuls():  # logits, d hidden, d weight
        torch.mm(h2, weight.detach().t())
        torch.mm(d_logits, weight.detach())
        torch.mm(d_logits.t(), h2)

    mm_ms, _ = time_ms(matmuls, device, args.quick)
    del d_logits
    (fused_ms, fused_host), fused_mib = time_ms(fused, device, args.quick), peak_mib(fused, device)
    (eager_ms, eager_host), eager_mib = time_ms(eager, device, args.quick), peak_mib(eager, device)
    (rows_ms, rows_host), rows_mib = time_ms(lora_rows, device, args.quick), peak_mib(lora_rows, device)
    name = f"chain fused-linear H={H}"
    rows.append([name, B, T, V, "gotr1 fused_linear", f"{fused_ms:.2f}", f"{fused_host:.2f}", f"{fused_mib:.0f}",
                 f"{eager_ms / fused_ms:.2f}x", f"{fused_mib / eager_mib:.2f}", "",
                 f"{fused_ms / mm_ms:.2f}x its 3 matmuls ({mm_ms:.2f} ms)"])
    rows.append([name, B, T, V, "gotr1 fused_linear, LoRA tag rows", f"{rows_ms:.2f}", f"{rows_host:.2f}",
                 f"{rows_mib:.0f}", f"{eager_ms / rows_ms:.2f}x", f"{rows_mib / eager_mib:.2f}", "",
                 f"{rows_ms / fused_ms:.2f}x the trained head"])
    rows.append([name, B, T, V, "eager reference", f"{eager_ms:.2f}", f"{eager_host:.2f}", f"{eager_mib:.0f}", "1.00x",
                 "1.00", "", ""])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference) (slow to compile)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    rows = []
    if device == "cuda":
        copy_gbs = copy_bandwidth_gbs()
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, copy bandwidth {copy_gbs:.0f} GB/s")
        for B in (16, 64) if args.quick else (16, 64, 128):
            bench_logits_case("image", B, 576, 16384, device, args, rows, copy_gbs)
        bench_logits_case("chain", 8 if args.quick else 16, 600, 102400, device, args, rows, copy_gbs)
        bench_fused_linear(8 if args.quick else 16, 600, 2048, 102400, device, args, rows)
    else:
        print("no CUDA: only the torch reference runs (Triton kernels are not compiled on CPU); small case")
        bench_logits_case("image (small)", 4, 64 if args.quick else 576, 16384, device, args, rows, None)

    header = ["case", "B*G", "T", "V", "impl", "fwd+bwd ms", "host ms", "peak MiB", "speed vs eager", "mem vs eager",
              "floor GB/s", "of copy BW"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
