"""How many CPU threads torch should use: the cores this process may run on that nobody else is busy on.

torch starts one thread per core it sees. On a shared machine that oversubscribes: with one other busy
process on two cores, the demo's SFT steps ran 20x slower at two threads than at one. The count here is
the smallest of the cores the process is pinned to (``sched_getaffinity``), the cgroup's CPU quota, and the
cores left after the other runnable processes (``/proc/loadavg``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota() -> float | None:
    """Cores granted by a cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) quota; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _other_runnable() -> int:
    """Runnable tasks other than this one, from the instantaneous count in ``/proc/loadavg``."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def usable_cores() -> int:
    """Cores this process can use now (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores - _other_runnable())


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`usable_cores`); returns the number set."""
    import torch

    if threads is None:
        threads = usable_cores()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
