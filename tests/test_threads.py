"""Torch's thread count follows the cores a process may use, never the machine's momentary load."""

import os

import pytest
import torch

from gotr1 import threads
from gotr1.threads import busy_warning, set_torch_threads, usable_cores


def test_usable_cores_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert usable_cores() == 8
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2.5)
    assert usable_cores() == 2
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)
    assert usable_cores() == 1  # a fractional quota still gets one thread


def test_load_never_changes_the_count_only_the_warning(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    monkeypatch.setattr(threads, "_other_runnable", lambda: 0)
    assert usable_cores() == 2 and busy_warning(2) is None
    monkeypatch.setattr(threads, "_other_runnable", lambda: 3)
    assert usable_cores() == 2  # the same count, so the same float rounding, on a busy machine
    warning = busy_warning(2)
    assert warning is not None and "3 other runnable" in warning and "--threads" in warning
    monkeypatch.setattr(threads, "_other_runnable", lambda: 1)
    assert busy_warning(1) is None  # one thread and one other task fit two cores


def test_set_torch_threads_sets_and_validates():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)
