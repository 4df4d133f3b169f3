"""Torch's thread count follows the cores a process can use."""

import os

import pytest
import torch

from gotr1 import threads
from gotr1.threads import set_torch_threads, usable_cores


def test_usable_cores_is_at_least_one_and_at_most_the_affinity(monkeypatch):
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_other_runnable", lambda: 1000)
    assert usable_cores() == 1  # a machine busy with other work still gets one thread


def test_busy_cores_and_quotas_are_taken_away(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "_other_runnable", lambda: 3)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert usable_cores() == 5
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2.5)
    assert usable_cores() == 1  # a 2.5-core quota, 3 other runnable tasks


def test_set_torch_threads_sets_and_validates():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)
