"""group_advantages (Triton on CUDA / interpreter on CPU) against its float64 torch reference."""

import math

import pytest
import torch

from gotr1.kernels.advantages import group_advantages, group_advantages_reference

# CUDA tensors where a GPU is present (compiled kernels), the interpreter elsewhere: `-m kernels` selects this
# suite, so that benchmarks/gpu_check.sh runs it compiled.
pytestmark = pytest.mark.kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _rewards(n_groups: int, G: int) -> torch.Tensor:
    """Random rewards with the awkward cases planted: a NaN, an all-equal group, a one-valid group, an all-NaN group."""
    r = torch.rand(n_groups * G, dtype=torch.float64) * 3 + 10  # a large offset tests the two-pass variance
    r[1] = math.nan
    if n_groups >= 4:
        r[G:2 * G] = 0.25
        r[2 * G:3 * G] = math.nan
        r[3 * G + 1:4 * G] = math.nan
    return r


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("G", [2, 4, 16])
@pytest.mark.parametrize("n_groups", [1, 5, 300])
def test_matches_float64_reference(scale, G, n_groups):
    rewards = _rewards(n_groups, G).to(torch.float32)
    expected = group_advantages_reference(rewards.double(), G, scale)
    got = group_advantages(rewards.to(DEVICE), G, scale)
    assert got.dtype == torch.float32 and got.shape == rewards.shape
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_degenerate_groups_give_finite_zeros(scale):
    G = 4
    rewards = _rewards(6, G).to(torch.float32)
    got = group_advantages(rewards.to(DEVICE), G, scale).cpu()
    assert torch.isfinite(got).all()
    assert got[1] == 0  # NaN reward
    assert (got[G:4 * G] == 0).all()  # all equal, all NaN, a single valid reward
    assert (got[4 * G:] != 0).all()  # ordinary groups are untouched


def test_values_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, math.nan, 5.0, 5.0], device=DEVICE)
    got = group_advantages(rewards, 3, eps=0.0).cpu()
    # group 1: mean 2, unbiased std 1; group 2: one NaN, equal valid rewards -> zeros
    torch.testing.assert_close(got, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    batch = group_advantages(rewards, 3, scale="batch", eps=0.0).cpu()
    batch_std = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0]).std()
    torch.testing.assert_close(batch, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / batch_std)


def test_float64_rewards_stay_float64():
    rewards = torch.randn(8, dtype=torch.float64)
    got = group_advantages(rewards, 4)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, group_advantages_reference(rewards, 4))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(rewards=torch.zeros(10), group_size=4), "group_size"),
        (dict(rewards=torch.zeros(8), group_size=0), "group_size"),
        (dict(rewards=torch.zeros(2, 4), group_size=4), "rewards"),
        (dict(rewards=torch.zeros(8, dtype=torch.int64), group_size=4), "rewards"),
        (dict(rewards=torch.zeros(8), group_size=4, scale="global"), "scale"),
        (dict(rewards=torch.zeros(8), group_size=4, eps=-1e-4), "eps"),
    ],
)
def test_bad_input_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        group_advantages(**kwargs)
