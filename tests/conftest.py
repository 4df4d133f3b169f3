"""Shared test setup: the Triton interpreter on CPU-only machines, seeded randomness, and the test
stand-ins of this folder (``fake_judge_server``) importable by name."""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The suite downloads nothing: a hub lookup (a test of what a missing model says) fails at once, instead of
# retrying an unreachable host for most of a minute. Set before huggingface_hub reads it at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Must be set before any @triton.jit kernel is decorated, i.e. before gotr1.kernels is imported.
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """For a module of tiny-model tests: their matmuls run faster on one thread than on two contending for a
    shared CPU (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
