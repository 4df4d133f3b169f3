"""How many CPU threads torch should use: the cores this process may run on, never the momentary load.

The count is the smaller of the cores the process is pinned to (``sched_getaffinity``) and the cgroup's CPU
quota. Both are fixed properties of where the process runs, so one command on one machine always picks the
same count, and with it the same float rounding: a run's result never depends on what else happened to run
at the time. Load is only reported: when other tasks are runnable, :func:`busy_warning` says so and names
``--threads``, because oversubscribed cores make a run slower (not different).
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
    """Cores this process may use (at least 1): its CPU affinity, capped by the cgroup quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def busy_warning(threads: int) -> str | None:
    """A one-line warning when other runnable tasks would share the ``threads`` cores, else None."""
    others = _other_runnable()
    if others == 0 or threads + others <= usable_cores():
        return None
    return (f"{others} other runnable task(s) share this machine's {usable_cores()} usable core(s): the run keeps "
            f"{threads} thread(s), so its result is unchanged, but it will be slower; pass --threads to choose "
            "another count (a different count changes float rounding, hence the numbers)")


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`usable_cores`); returns the number set."""
    import torch

    if threads is None:
        threads = usable_cores()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
