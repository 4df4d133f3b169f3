"""Compile every Triton kernel variant for a GPU target ahead of time, on a machine without one.

    python -m gotr1.kernels.aot [--arch 90] [--space] [--json FILE]

The launchers run on small CPU tensors with the kernels' ``run`` replaced by a recorder, so each variant is the
launch a real call makes (its argument types, specialisations, constexpr flags and launch options), at the shipped
default configurations and GoT-R1's vocabularies. Each distinct variant is then compiled by ``triton.compile``
for ``GPUTarget("cuda", arch, 32)``: Triton's own ptxas does the codegen, no driver or GPU is involved. The table
gives per variant its registers per thread, shared memory per block and local memory (spills) per thread, read
from the cubin with ``cuobjdump``. ``--space`` also compiles the tuner's whole search space of the row kernels,
to see which configurations spill.

Needs the kernels compiled, not interpreted: run it with ``TRITON_INTERPRET=0`` (the tests run it in a
subprocess). Exits 2, saying why, when this Triton cannot compile for CUDA here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from ._dispatch import INTERPRETING
from .tuning import KERNELS

SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024}  # per block, opt-in
VOCABULARIES = {"image": 16384, "chain": 102400}


@dataclass
class Variant:
    """One compiled kernel variant: what was launched and what the compiler made of it."""

    kernel: str
    case: str
    options: dict
    registers: int | None = None
    shared_bytes: int | None = None
    local_bytes: int | None = None
    binary: str | None = None  # a hash of the cubin: two variants with the same one are the same kernel
    seconds: float = 0.0
    error: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Recording the launches
# ---------------------------------------------------------------------------------------------------------


def _launches():
    """``[(case, kernel, args, kwargs)]`` of representative calls of every launcher, recorded, not run."""
    from . import _grpo_kernels as grpo
    from . import _sampling_kernels as sampling
    from . import advantages
    from .grpo_reference import LossOptions

    recorded = []
    case = [""]

    def record(self, *args, grid, warmup, **kwargs):
        recorded.append((case[0], self, args, kwargs))

    with _recording(record):
        V, B, T, n = VOCABULARIES["chain"], 2, 4, 8  # BLOCK_V is capped by V: the image vocabulary compiles the same
        logits = torch.zeros(B, T, V, dtype=torch.bfloat16)
        ids, valid = torch.zeros(B * T, dtype=torch.int64), torch.ones(B * T, dtype=torch.uint8)
        f32 = torch.zeros(n)
        fwd, bwd = KERNELS["grpo_forward"].default, KERNELS["grpo_backward"].default
        case[0] = "log-probs"
        grpo.forward_rows(logits, ids, valid, temperature=1.0, tiles=fwd)
        case[0] = "log-probs + entropy"
        grpo.forward_rows(logits, ids, valid, temperature=1.0, tiles=fwd, entropy=True)
        for name, opts, old, tok_w in (
            ("grpo, KL", LossOptions(beta=0.04), f32, None),
            ("no old, no KL", LossOptions(beta=0.0), None, None),
            ("dual clip", LossOptions(delta=3.0), f32, None),
            ("cispo", LossOptions(loss_type="cispo"), f32, None),
            ("token weights", LossOptions(), f32, f32),
        ):
            case[0] = f"loss: {name}"
            grpo.forward_rows(logits, ids, valid, temperature=1.0, tiles=fwd,
                              objective=(f32[:B], old, f32, f32[:B], opts, tok_w))
        case[0] = "d logits"
        grpo.backward_rows(logits, ids, f32, f32, torch.ones(1), temperature=1.0, tiles=bwd)
        case[0] = "d logits + entropy bonus"
        grpo.backward_rows(logits, ids, f32, f32, torch.ones(1), temperature=1.0, tiles=bwd, ecoef=f32, entropy=f32)
        for level in ("sequence", "token"):
            case[0] = f"{level}-level objective"
            grpo.objective_rows(f32, valid, f32[:B], f32, f32, f32[:B], B, T, LossOptions(importance_level=level))
        image = torch.zeros(32, VOCABULARIES["image"], dtype=torch.bfloat16)
        chain = torch.zeros(64, VOCABULARIES["chain"], dtype=torch.bfloat16)
        step = torch.zeros(1, dtype=torch.int64)
        for name, cond, uncond, extra in (
            ("image, CFG, step on the device", image, image, dict(guidance=5.0, top_k=None, top_p=None, step=step,
                                                                 cond_logprob=True)),
            ("chain, plain", chain, None, dict(guidance=1.0, top_k=None, top_p=None, step=3, cond_logprob=False)),
            ("chain, greedy", chain, None, dict(guidance=1.0, top_k=1, top_p=None, step=3, cond_logprob=False)),
            ("chain, top-k", chain, None, dict(guidance=1.0, top_k=50, top_p=None, step=3, cond_logprob=False)),
            ("chain, top-p", chain, None, dict(guidance=1.0, top_k=None, top_p=0.9, step=3, cond_logprob=False)),
            ("image, CFG, top-k + top-p", image, image, dict(guidance=5.0, top_k=50, top_p=0.9, step=step,
                                                            cond_logprob=True)),
        ):
            case[0] = f"sample: {name}"
            sampling.launch_sample(cond, uncond, temperature=1.0, seed=0, config=KERNELS["sample"].default, **extra)
        for scale in advantages.SCALES:
            case[0] = f"advantages: scale={scale}"
            advantages.group_advantages(torch.rand(128), 16, scale, config=KERNELS["advantages"].default)
        # What the tuner's pruning of the row kernels rests on (tuning._prune_rows): other num_stages of the
        # defaults, and tiles of 128 and 2 elements per thread.
        for probe in ({"num_stages": 2}, {"num_stages": 4}, {"BLOCK_V": 8192, "num_warps": 2},
                      {"BLOCK_V": 512, "num_warps": 8}):
            case[0] = f"tuning probe {probe}"
            grpo.forward_rows(logits, ids, valid, temperature=1.0, tiles={**fwd, **probe})
            grpo.backward_rows(logits, ids, f32, f32, torch.ones(1), temperature=1.0, tiles={**bwd, **probe})
    return recorded


@contextmanager
def _recording(record):
    """Inside the block kernels launch into ``record(kernel, *args, grid=, warmup=, **kwargs)`` instead of running,
    and the launchers see CUDA tensors (they pick the GPU's launch settings by ``tensor.is_cuda``)."""
    import triton

    from . import advantages

    jit = triton.runtime.jit.JITFunction
    run, is_cuda, use_triton = jit.run, torch.Tensor.is_cuda, advantages.use_triton
    jit.run, torch.Tensor.is_cuda, advantages.use_triton = record, property(lambda self: True), lambda t: True
    try:
        yield
    finally:
        jit.run, torch.Tensor.is_cuda, advantages.use_triton = run, is_cuda, use_triton


def _space_launches():
    """The row kernels over the tuner's whole search space, at the chain vocabulary (bf16)."""
    from . import _grpo_kernels as grpo
    from .grpo_reference import LossOptions

    V, B, T = VOCABULARIES["chain"], 2, 4
    logits = torch.zeros(B, T, V, dtype=torch.bfloat16)
    ids, valid, f32 = torch.zeros(B * T, dtype=torch.int64), torch.ones(B * T, dtype=torch.uint8), torch.zeros(8)
    calls = []
    for config in KERNELS["grpo_forward"].configs():
        calls.append((f"forward {config}", lambda c=config: grpo.forward_rows(
            logits, ids, valid, temperature=1.0, tiles=c, objective=(f32[:B], f32, f32, f32[:B], LossOptions()))))
    for config in KERNELS["grpo_backward"].configs():
        calls.append((f"backward {config}", lambda c=config: grpo.backward_rows(
            logits, ids, f32, f32, torch.ones(1), temperature=1.0, tiles=c)))
    return calls


# ---------------------------------------------------------------------------------------------------------
# Compiling them
# ---------------------------------------------------------------------------------------------------------


def _resources(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, local bytes) per thread from ``cuobjdump --dump-resource-usage``; (None, None) without it."""
    from triton.backends.nvidia import compiler as nvidia

    tool = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+).*?LOCAL:(\d+)", out, re.S)
    return (int(found.group(1)), int(found.group(2))) if found else (None, None)


def compile_launch(kernel, args, kwargs, target) -> tuple[dict, object]:
    """Compile a recorded launch for ``target`` as ``JITFunction.run`` would: (launch options, compiled kernel)."""
    import triton
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                              options=options.__dict__)
    shown = {k: v for k, v in kwargs.items() if k.isupper() or k in ("num_warps", "num_stages")}
    return shown, compiled


def compile_all(arch: int, space: bool = False, log=None) -> list[Variant]:
    """Every recorded variant (and with ``space`` the row kernels' search space) compiled for sm_``arch``."""
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", arch, 32)
    launches = [(case, kernel, args, kwargs) for case, kernel, args, kwargs in _launches()]
    if space:
        for case, call in _space_launches():
            start = len(launches)
            launches += [(case, k, a, kw) for _, k, a, kw in _record(call)]
            assert len(launches) == start + 1
    seen, variants = set(), []
    for case, kernel, args, kwargs in launches:
        key = (kernel.fn.__name__, tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
               tuple(_type_key(a) for a in args))
        if key in seen:
            continue
        seen.add(key)
        variant = Variant(kernel.fn.__name__, case, {})
        start = time.perf_counter()
        try:
            variant.options, compiled = compile_launch(kernel, args, kwargs, target)
            variant.shared_bytes = int(compiled.metadata.shared)
            variant.binary = hashlib.sha1(compiled.asm["cubin"]).hexdigest()[:12]
            variant.registers, variant.local_bytes = _resources(compiled.asm["cubin"])
        except Exception as err:  # a variant that does not compile is a finding, not a crash of the check
            variant.error = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        variant.seconds = time.perf_counter() - start
        variants.append(variant)
        if log is not None:
            log(variant)
    return variants


def _record(call):
    """The launches one call makes (recorded, not run)."""
    recorded = []

    def record(self, *args, grid, warmup, **kwargs):
        recorded.append((None, self, args, kwargs))

    with _recording(record):
        call()
    return recorded


def _type_key(arg):
    """What of an argument decides the compiled variant: a tensor's dtype, an int's width and divisibility."""
    if isinstance(arg, torch.Tensor):
        return str(arg.dtype)
    if isinstance(arg, bool) or not isinstance(arg, int):
        return type(arg).__name__
    return ("int", arg == 1, arg % 16 == 0, abs(arg) >= 2**31)


def toolchain_problem(arch: int = 90) -> str | None:
    """Why this machine cannot compile Triton kernels for sm_``arch``, or None when it can (a one-line kernel is
    compiled to find out: Triton's internals and its bundled ptxas differ between releases)."""
    if INTERPRETING:
        return "the kernels were decorated for the Triton interpreter (TRITON_INTERPRET=1); run with TRITON_INTERPRET=0"
    try:
        import triton
        import triton.language as tl
        from triton.backends.compiler import GPUTarget

        @triton.jit
        def _probe(x_ptr, BLOCK: tl.constexpr):
            tl.store(x_ptr + tl.arange(0, BLOCK), tl.zeros([BLOCK], tl.float32))

        compile_launch(_probe, (torch.zeros(16),), {"BLOCK": 16}, GPUTarget("cuda", arch, 32))
    except Exception as err:  # ImportError, a missing ptxas, an internal API of another Triton release
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return None


def _launch_text(options: dict) -> str:
    """The flags a variant sets and its tile sizes, compactly: ``HAS_OLD HAS_KL BLOCK_V=2048 num_warps=4``."""
    return " ".join(k if v is True else f"{k}={v}" for k, v in options.items() if v is not False)


def _table(variants: list[Variant], arch: int) -> str:
    limit = SHARED_LIMIT.get(arch)
    lines = ["| kernel | case | launch | regs | shared KiB | spill (local B) | compile s |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        if v.error:
            lines.append(f"| {v.kernel} | {v.case} | {_launch_text(v.options)} | failed: {v.error} | | | "
                         f"{v.seconds:.1f} |")
            continue
        over = " (over the limit)" if limit is not None and v.shared_bytes > limit else ""
        lines.append(f"| {v.kernel} | {v.case} | {_launch_text(v.options)} | {v.registers} | "
                     f"{v.shared_bytes / 1024:.1f}{over} | {v.local_bytes} | {v.seconds:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gotr1.kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--space", action="store_true", help="also the row kernels' whole tuning space")
    parser.add_argument("--json", default=None, help="write the variants as JSON to this file")
    args = parser.parse_args(argv)
    problem = toolchain_problem(args.arch)
    if problem is not None:
        print(f"gotr1.kernels.aot: cannot compile for CUDA here: {problem}", file=sys.stderr)
        return 2
    variants = compile_all(args.arch, args.space, log=lambda v: print(
        f"[aot] {v.kernel} {v.case}: {'failed' if v.error else 'ok'} in {v.seconds:.1f}s", file=sys.stderr, flush=True))
    print(f"### Triton kernels compiled for sm_{args.arch} (no GPU)\n")
    print(_table(variants, args.arch))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"arch": args.arch, "shared_limit": SHARED_LIMIT.get(args.arch),
                       "variants": [asdict(v) for v in variants]}, f, indent=1)
    return 1 if any(v.error for v in variants) else 0


if __name__ == "__main__":
    sys.exit(main())
