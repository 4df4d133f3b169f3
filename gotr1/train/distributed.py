"""Process-group plumbing shared by the command line, the GRPO trainer and the benchmarks.

Outside ``torchrun`` everything here degrades to one process of rank 0, so single-GPU and CPU runs take
the same code path as multi-rank ones.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def join_process_group() -> None:
    """Join the process group ``torchrun`` describes (NCCL on GPUs, gloo otherwise) and pick this rank's
    GPU; a no-op outside ``torchrun`` or when already joined."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def leave_process_group() -> None:
    """Wait for every rank, then leave the process group (a rank that exits early can abort the others'
    last collectives); a no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device() -> str:
    """This rank's device: ``cuda:<LOCAL_RANK>`` when there is a GPU, else ``cpu``."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the joined process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Every rank's equal-sized 1-D ``values`` concatenated in rank order."""
    _, world = rank_and_world()
    if world == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world)]
    dist.all_gather(parts, values)
    return torch.cat(parts)


def sum_over_ranks(values: dict, device) -> dict:
    """``values`` (numbers under the same keys on every rank) summed over the ranks, as floats; one
    all-reduce on ``device`` (a CUDA device under NCCL)."""
    _, world = rank_and_world()
    if world == 1:
        return {name: float(v) for name, v in values.items()}
    names = sorted(values)
    summed = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return dict(zip(names, summed.tolist()))
