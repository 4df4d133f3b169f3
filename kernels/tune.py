"""Tune the kernels' launch configurations on this GPU and store the best per (device, kernel, shape bucket).

    python -m gotr1.kernels.tune [--shapes image,chain] [--out FILE] [--hidden 2048] [--rows 64]

For each kernel of ``gotr1.kernels.tuning.KERNELS`` and each GoT-R1 shape (image phase: rows x 576 tokens over
the 16384-code VQ vocabulary, with classifier-free guidance when sampling; chain phase: rows x 600 tokens
over the 102400-token text vocabulary; rows = B*G), every configuration of the kernel's space that can win
(``KernelSpace.prune`` leaves out those that cannot, e.g. the row kernels' huge tiles on few warps) first runs
once and is compared with the default configuration's output: one that disagrees (or fails to compile) is
skipped and reported. The others are timed (median of ``triton.testing.do_bench``), each one reported as it
is timed, and the fastest of each case is merged into the config file (``tuning.config_path()``, or
``--out``) before the next case starts, so a run cut short keeps what it tuned (``--budget-seconds`` stops it
starting new configurations). A table of default and best times is printed at the end. Run it on an idle GPU;
training never tunes, it only reads the file.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import tuning

SHAPES = {"image": (576, 16384), "chain": (600, 102400)}  # (tokens per row, vocabulary)
GUIDANCE = 5.0  # Janus-Pro's CFG scale in the image phase


def _relative_error(got, ref) -> float:
    got, ref = got.double(), ref.double()
    return ((got - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def _agree(outputs, reference, tol: float) -> str | None:
    """None if every output matches the default's (integer outputs exactly), else what differs."""
    for i, (got, ref) in enumerate(zip(outputs, reference)):
        if not got.is_floating_point():
            if not torch.equal(got, ref):
                return f"output {i}: {int((got != ref).sum())} ids differ"
        elif not (err := _relative_error(got, ref)) <= tol:
            return f"output {i}: relative error {err:.2e} > {tol:.0e}"
    return None


def _cases(shape: str, rows: int, hidden: int, device):
    """(kernel, bucket, run(config) -> outputs, tolerance) for one GoT-R1 shape."""
    from ._grpo_kernels import backward_rows, forward_rows
    from ._sampling_kernels import launch_sample
    from .fused_linear_grpo import fused_linear_grpo_loss

    T, V = SHAPES[shape]
    bf16 = dict(dtype=torch.bfloat16, device=device)
    logits = torch.randn(rows, T, V, **bf16) * 2
    ids = torch.randint(0, V, (rows * T,), device=device)
    valid = torch.ones(rows * T, dtype=torch.uint8, device=device)
    lse, _ = forward_rows(logits, ids, valid, temperature=1.0, tiles=tuning.KERNELS["grpo_forward"].default)
    coef = torch.randn(rows * T, dtype=torch.float32, device=device)
    one = torch.ones(1, dtype=torch.float32, device=device)
    yield ("grpo_forward", f"V={V}", lambda c: forward_rows(logits, ids, valid, temperature=1.0, tiles=c), 1e-5)
    yield ("grpo_backward", f"V={V}",
           lambda c: (backward_rows(logits, ids, lse, coef, one, temperature=1.0, tiles=c),), 1e-2)

    cond = logits[:, 0].contiguous()
    uncond = logits[:, 1].contiguous() if shape == "image" else None
    sampling = dict(guidance=GUIDANCE if shape == "image" else 1.0, temperature=1.0, top_k=None, top_p=None,
                    seed=0, step=0, cond_logprob=False)
    yield "sample", f"B={rows} V={V}", lambda c: launch_sample(cond, uncond, **sampling, config=c), 1e-5

    h = (torch.randn(rows, T, hidden, **bf16) / hidden**0.5).requires_grad_()
    w = (torch.randn(V, hidden, **bf16) / hidden**0.5).requires_grad_()
    token_ids, mask = ids.view(rows, T), torch.ones(rows, T, dtype=torch.bool, device=device)
    advantages = torch.randn(rows, device=device)

    def fused(config):
        h.grad = w.grad = None
        loss, _ = fused_linear_grpo_loss(h, w, token_ids, mask, advantages, beta=0.0,
                                         chunk_size=tuning.chunk_rows(config, V, h.element_size()))
        loss.backward()
        return loss.detach(), h.grad, w.grad

    yield "fused_linear", f"V={V} H={hidden}", fused, 2e-2


def _advantage_case(rows: int, device):
    from .advantages import group_advantages

    rewards = torch.rand(rows, device=device)
    group = min(16, rows)
    return "advantages", f"n={rows} G={group}", lambda c: (group_advantages(rewards, group, config=c),), 1e-5


def _shape_args(label: str) -> dict[str, int]:
    """``"V=16384 H=2048"`` -> ``{"V": 16384, "H": 2048}``, the keyword arguments of a kernel's bucket."""
    return {k: int(v) for k, v in (part.split("=") for part in label.split())}


def tune_case(kernel, label, run, tol, *, deadline: float = float("inf"), log=None):
    """(bucket, default ms, best ms, best config, skipped [(config, why)]) of one kernel at one shape.

    Times the space's candidates (pruned configurations are skipped, with their reason), the default first, and
    stops starting new ones past ``deadline`` (``time.monotonic()``); ``log(message)`` reports each one.
    """
    from triton.testing import do_bench

    spec = tuning.KERNELS[kernel]
    candidates, skipped = spec.candidates()
    reference = run(spec.default)
    torch.cuda.synchronize()
    timed = []
    for n, config in enumerate(candidates, 1):
        if time.monotonic() > deadline:
            skipped += [(c, "time budget spent") for c in candidates[n - 1:]]
            break
        try:
            problem = _agree(run(config), reference, tol)
        except Exception as err:  # a configuration that does not compile or run here (e.g. shared memory)
            problem = f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
        if problem is not None:
            skipped.append((config, problem))
            continue
        timed.append((do_bench(lambda: run(config), warmup=10, rep=50, return_mode="median"), config))
        if log is not None:
            log(f"{kernel} {label}: {n}/{len(candidates)} {config}: {timed[-1][0]:.3f} ms "
                f"(best {min(t[0] for t in timed):.3f})")
    default_ms = next(ms for ms, c in timed if c == spec.default)
    best_ms, best = min(timed, key=lambda t: t[0])
    return spec.bucket(**_shape_args(label)), default_ms, best_ms, best, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gotr1.kernels.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="image,chain", help=f"comma-separated, of {sorted(SHAPES)}")
    parser.add_argument("--out", default=None, help=f"config file (default: ${tuning.ENV_VAR} or "
                                                     f"~/.cache/gotr1/kernels.json)")
    parser.add_argument("--hidden", type=int, default=2048, help="hidden size H of the fused-linear loss")
    parser.add_argument("--rows", type=int, default=64, help="B*G, sequences per batch")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="stop starting new configurations after this long (what was tuned is kept)")
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    if unknown := [s for s in shapes if s not in SHAPES]:
        parser.error(f"--shapes: unknown {unknown}; choose from {sorted(SHAPES)}")
    if not torch.cuda.is_available():
        print("gotr1.kernels.tune needs a CUDA GPU: configurations are tuned per GPU model, and this machine has "
              "none (torch.cuda.is_available() is False). The kernels keep their shipped defaults.", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    name = tuning.device_name(device)
    start = time.monotonic()
    deadline = start + (args.budget_seconds if args.budget_seconds is not None else float("inf"))
    table, path = [], None

    def log(message: str) -> None:
        print(f"[tune {time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    def tune(kernel, label, run, tol):
        nonlocal path
        if time.monotonic() > deadline:
            log(f"{kernel} {label}: not tuned, time budget spent")
            return
        bucket, default_ms, best_ms, config, skipped = tune_case(kernel, label, run, tol, deadline=deadline, log=log)
        path = tuning.save_tuned(name, {kernel: {bucket: config}}, args.out)  # kept if a later case is cut short
        table.append((kernel, label, default_ms, best_ms, config))
        log(f"{kernel} {label}: best {config} {best_ms:.3f} ms (default {default_ms:.3f} ms), written to {path}; "
            f"{len(skipped)} skipped")
        for bad, why in skipped:
            print(f"skipped {kernel} {label} {bad}: {why}", file=sys.stderr)

    for shape in shapes:  # one shape's tensors at a time
        for case in _cases(shape, args.rows, args.hidden, device):
            tune(*case)
        torch.cuda.empty_cache()
    tune(*_advantage_case(args.rows, device))
    print(f"{name}: best configurations written to {path}")
    print(f"{'kernel':<14} {'shape':<18} {'default ms':>10} {'best ms':>9} {'speedup':>7}  best config")
    for kernel, label, default_ms, best_ms, config in table:
        print(f"{kernel:<14} {label:<18} {default_ms:>10.3f} {best_ms:>9.3f} {default_ms / best_ms:>6.2f}x  {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
