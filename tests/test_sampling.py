"""gotr1.kernels.sampling: the fused CFG / temperature / top-k / top-p sampler against its torch reference.

On CPU the Triton kernel runs under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the same
kernel code is checked here; on a GPU machine every test runs on CUDA tensors, so the compiled kernel is
(``-m kernels``, as benchmarks/gpu_check.sh runs it), and the ``gpu`` tests add the production shapes. Distribution tests replicate one
logits row over thousands of rows in ONE call: rows draw independently, so that is thousands of draws.
"""

from __future__ import annotations

import math

import pytest
import torch

from gotr1.kernels.sampling import guided_logits_reference, kept_mask_reference, sample, sample_reference

# CUDA tensors where a GPU is present (compiled kernels), the interpreter elsewhere: `-m kernels` selects this
# suite, so that benchmarks/gpu_check.sh runs it compiled.
pytestmark = pytest.mark.kernels

NEG_INF = float("-inf")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _on_the_kernels_device():
    """The tensors a test makes land on CUDA where a GPU is present: the compiled kernel is what it checks there."""
    with torch.device(DEVICE):
        yield


def _reference_logprobs(cond, uncond, guidance, temperature, top_k=None, top_p=None):
    """float64 [B, V] log-probs of the final sampling distribution (the reference's semantics)."""
    z = guided_logits_reference(cond, uncond, guidance) * (1.0 / temperature)
    keep = kept_mask_reference(z, None if top_k is None or top_k >= z.shape[-1] else top_k, top_p)
    return torch.log_softmax(z.double().masked_fill(~keep, NEG_INF), dim=-1)


def _chi2_critical(dof, z_alpha=4.753):
    """Upper critical value of chi-square(dof) by Wilson-Hilferty; z_alpha = 4.753 is the 1e-6 normal quantile."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z_alpha * math.sqrt(a)) ** 3


def _check_frequencies(ids, logprobs_row, n_draws):
    """Chi-square goodness of fit of the draws to exp(logprobs_row), and support equality."""
    probs = logprobs_row.exp()
    support = probs > 0
    counts = torch.bincount(ids, minlength=probs.numel()).double()
    assert bool(support[ids].all()), f"drew tokens outside the support: {sorted(set(ids[~support[ids]].tolist()))}"
    assert bool((counts[support] > 0).all()), "a supported token was never drawn"
    expected = probs[support] * n_draws
    stat = ((counts[support] - expected) ** 2 / expected).sum().item()
    dof = int(support.sum()) - 1
    if dof > 0:
        assert stat < _chi2_critical(dof), f"chi-square {stat:.1f} over {dof} dof"


# -------------------------------------------------------------------------------------------------------
# Greedy, determinism, randomness keys
# -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cfg", [False, True])
def test_top_k_1_is_exact_argmax_first_index_on_ties(dtype, cfg):
    cond = torch.randint(-3, 4, (64, 301)).to(dtype)  # small integers: many exact ties at the maximum
    uncond = torch.randint(-3, 4, (64, 301)).to(dtype) if cfg else None
    cond[5] = 1.0  # an all-equal row: index 0
    if cfg:
        uncond[5] = 1.0
    guidance = 2.0 if cfg else 1.0
    ids, logp = sample(cond, uncond, guidance=guidance, temperature=0.7, top_k=1, seed=0, step=0)
    expected = guided_logits_reference(cond, uncond, guidance).argmax(dim=-1)
    assert torch.equal(ids, expected)
    assert ids[5].item() == 0
    assert torch.equal(logp, torch.zeros(64))
    _, logp_cond = sample(cond, uncond, guidance=guidance, temperature=0.7, top_k=1, seed=0, step=0,
                          logprob_of="cond")
    ref = torch.log_softmax(cond.float() / 0.7, dim=-1).gather(-1, expected[:, None])[:, 0]
    torch.testing.assert_close(logp_cond, ref, atol=1e-5, rtol=1e-5)


def test_identical_calls_identical_ids_and_seed_or_step_change_them():
    cond = torch.randn(256, 37) * 0.3  # flat rows: another stream changes most draws
    uncond = torch.randn(256, 37) * 0.3
    kwargs = dict(guidance=1.5, temperature=1.0, top_p=0.95)
    first, logp = sample(cond, uncond, seed=7, step=3, **kwargs)
    again, logp_again = sample(cond, uncond, seed=7, step=3, **kwargs)
    assert torch.equal(first, again) and torch.equal(logp, logp_again)
    for other in (dict(seed=8, step=3), dict(seed=7, step=4)):
        changed, _ = sample(cond, uncond, **other, **kwargs)
        assert (changed != first).float().mean() > 0.5, other


def test_step_tensor_equals_step_int():
    cond = torch.randn(40, 37)
    ids, logp = sample(cond, seed=1, step=12, top_k=9)
    ids_t, logp_t = sample(cond, seed=1, step=torch.tensor(12), top_k=9)
    assert torch.equal(ids, ids_t) and torch.equal(logp, logp_t)


@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=4), dict(top_p=0.8)], ids=["plain", "top_k", "top_p"])
def test_row_sample_independent_of_other_rows_and_batch_size(kwargs):
    cond = torch.randn(48, 100)
    uncond = torch.randn(48, 100)
    ids, logp = sample(cond, uncond, guidance=2.0, seed=3, step=5, **kwargs)
    head_ids, head_logp = sample(cond[:17], uncond[:17], guidance=2.0, seed=3, step=5, **kwargs)
    assert torch.equal(head_ids, ids[:17]) and torch.equal(head_logp, logp[:17])
    other = cond.clone()
    other[1:] = torch.randn(47, 100) * 5.0
    ids_other, _ = sample(other, uncond, guidance=2.0, seed=3, step=5, **kwargs)
    assert ids_other[0] == ids[0]


# -------------------------------------------------------------------------------------------------------
# Distribution: chi-square against the reference probabilities, support equality
# -------------------------------------------------------------------------------------------------------

DISTRIBUTIONS = [
    dict(cfg=False, temperature=1.0),
    dict(cfg=True, temperature=0.8),
    dict(cfg=False, temperature=1.0, top_k=7),
    dict(cfg=True, temperature=1.0, top_k=12),
    dict(cfg=False, temperature=1.0, top_p=0.6),
    dict(cfg=True, temperature=1.3, top_p=0.85),
    dict(cfg=True, temperature=1.0, top_k=20, top_p=0.7),
]


@pytest.mark.parametrize("case", DISTRIBUTIONS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_empirical_frequencies_match_reference(case):
    n_draws, vocab = 4000, 37
    case = dict(case)
    cfg = case.pop("cfg")
    cond_row = torch.randn(vocab) * 0.6  # mild spread: every kept token gets enough draws to test
    uncond_row = torch.randn(vocab) * 0.6
    guidance = 1.5 if cfg else 1.0
    cond = cond_row.expand(n_draws, vocab).contiguous()
    uncond = uncond_row.expand(n_draws, vocab).contiguous() if cfg else None
    ids, logp = sample(cond, uncond, guidance=guidance, seed=11, step=0, **case)
    ref = _reference_logprobs(cond_row[None], None if not cfg else uncond_row[None], guidance, **case)[0]
    _check_frequencies(ids, ref, n_draws)
    torch.testing.assert_close(logp.double(), ref[ids], atol=2e-5, rtol=0)


def test_reference_sampler_matches_its_own_probabilities():
    n_draws, vocab = 3000, 37
    cond_row = torch.randn(vocab) * 0.6
    cond = cond_row.expand(n_draws, vocab).contiguous()
    ids, logp = sample_reference(cond, seed=2, step=0, top_p=0.8)
    ref = _reference_logprobs(cond_row[None], None, 1.0, 1.0, top_p=0.8)[0]
    _check_frequencies(ids, ref, n_draws)
    torch.testing.assert_close(logp.double(), ref[ids], atol=1e-5, rtol=0)


def test_ties_at_the_top_k_boundary_keep_the_lower_indices():
    row = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0, 3.0, 2.0])  # 3s at 1, 3, 7; 2s at 2, 4, 5, 8
    cond = row.expand(2000, 9).contiguous()
    ids, logp = sample(cond, seed=0, step=0, top_k=5)  # the three 3s, then the 2s at 2 and 4
    assert set(ids.tolist()) == {1, 3, 7, 2, 4}
    ref = _reference_logprobs(row[None], None, 1.0, 1.0, top_k=5)[0]
    torch.testing.assert_close(logp.double(), ref[ids], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs, kept", [(dict(top_p=0.5), 19), (dict(top_k=5), 5), (dict(), 37)])
def test_all_equal_rows(kwargs, kept):
    # top-p 0.5 over 37 equal tokens: 18 of them hold 0.486 < 0.5, so the first 19 by index are kept
    cond = torch.full((3000, 37), 0.25)
    ids, logp = sample(cond, seed=4, step=1, **kwargs)
    assert set(ids.tolist()) == set(range(kept))
    torch.testing.assert_close(logp, torch.full_like(logp, -math.log(kept)))


# -------------------------------------------------------------------------------------------------------
# Log-probs against the reference; odd sizes, dtypes, -inf, tiny temperature
# -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [37, 1000, 3001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=13), dict(top_p=0.9), dict(top_k=50, top_p=0.5),
                                    dict(logprob_of="cond", top_p=0.7)],
                         ids=["plain", "top_k", "top_p", "top_k_top_p", "cond"])
def test_logp_matches_reference_log_softmax(vocab, dtype, kwargs):
    rows = 24 if vocab > 1000 else 64
    cond = (torch.randn(rows, vocab) * 3.0).to(dtype)
    uncond = (torch.randn(rows, vocab) * 3.0).to(dtype)
    kwargs = dict(kwargs)
    logprob_of = kwargs.pop("logprob_of", "mixed")
    ids, logp = sample(cond, uncond, guidance=4.0, temperature=0.9, seed=5, step=2, logprob_of=logprob_of,
                       **kwargs)
    ref = _reference_logprobs(cond, uncond, 4.0, 0.9, **kwargs)
    assert bool(ref.gather(-1, ids[:, None]).isfinite().all()), "a token outside the reference's kept set"
    if logprob_of == "cond":
        ref = torch.log_softmax(cond.double() / 0.9, dim=-1)
    torch.testing.assert_close(logp.double(), ref.gather(-1, ids[:, None])[:, 0], atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=30), dict(top_p=0.9), dict(top_k=1)])
def test_rows_with_minus_inf_are_never_sampled_there(kwargs):
    cond = torch.randn(200, 37)
    uncond = torch.randn(200, 37)
    cond[:, :10] = NEG_INF
    uncond[:, 30:] = NEG_INF  # masked in the unconditional branch only: masked too
    cond[0, 11:] = NEG_INF  # a row with a single finite token
    ids, logp = sample(cond, uncond, guidance=5.0, seed=9, step=0, **kwargs)
    assert bool(((ids >= 10) & (ids < 30)).all())
    assert ids[0].item() == 10 and abs(logp[0].item()) < 1e-6
    assert bool(logp.isfinite().all())
    ref = _reference_logprobs(cond, uncond, 5.0, 1.0, **kwargs)
    torch.testing.assert_close(logp.double(), ref.gather(-1, ids[:, None])[:, 0], atol=2e-5, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=5), dict(top_p=0.9)])
def test_tiny_temperature_is_finite_and_greedy(kwargs):
    # distinct guided logits 0.015 apart: z gaps of 150 at T = 1e-4, so the argmax holds all the mass
    cond = torch.stack([torch.randperm(501) for _ in range(128)]).float() * 0.01
    uncond = cond * 0.5
    ids, logp = sample(cond, uncond, guidance=2.0, temperature=1e-4, seed=0, step=0, **kwargs)
    assert torch.equal(ids, guided_logits_reference(cond, uncond, 2.0).argmax(-1))
    assert bool(logp.isfinite().all()) and logp.abs().max() < 1e-3
    _, logp_cond = sample(cond, uncond, guidance=2.0, temperature=1e-4, seed=0, step=0, logprob_of="cond",
                          **kwargs)
    assert bool(logp_cond.isfinite().all())


# -------------------------------------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, name", [
    (dict(guidance=0.5), "guidance"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(logprob_of="uncond"), "logprob_of"),
    (dict(seed=-1), "seed"),
    (dict(step=-3), "step"),
    (dict(uncond=torch.zeros(4, 36)), "uncond_logits"),
    (dict(cond=torch.zeros(4, 37, 1)), "cond_logits"),
])
def test_bad_arguments_raise_value_error_naming_them(bad, name):
    args = dict(cond=torch.zeros(4, 37), uncond=torch.zeros(4, 37), guidance=2.0, seed=0, step=0)
    args.update(bad)
    cond, uncond = args.pop("cond"), args.pop("uncond")
    for fn in (sample, sample_reference):
        with pytest.raises(ValueError, match=name):
            fn(cond, uncond, **args)


def test_guidance_without_uncond_and_bad_dtype_raise():
    with pytest.raises(ValueError, match="guidance"):
        sample(torch.zeros(2, 5), guidance=3.0, seed=0, step=0)
    with pytest.raises(TypeError, match="cond_logits"):
        sample(torch.zeros(2, 5, dtype=torch.float64), seed=0, step=0)


# -------------------------------------------------------------------------------------------------------
# Compiled CUDA (benchmarks/gpu_check.sh)
# -------------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=50), dict(top_p=0.9), dict(top_k=100, top_p=0.8),
                                    dict(top_k=1)], ids=["plain", "top_k", "top_p", "top_k_top_p", "greedy"])
@pytest.mark.parametrize("vocab", [16384, 102399])  # 102399: a partial last chunk at the text vocabulary's size
def test_cuda_logp_and_support_match_reference(kwargs, vocab):
    cond = (torch.randn(32, vocab, device="cuda") * 3.0).bfloat16()
    uncond = (torch.randn(32, vocab, device="cuda") * 3.0).bfloat16()
    cond[:, :7] = NEG_INF
    ids, logp = sample(cond, uncond, guidance=5.0, temperature=0.9, seed=1, step=3, **kwargs)
    again, _ = sample(cond, uncond, guidance=5.0, temperature=0.9, seed=1, step=3, **kwargs)
    assert torch.equal(ids, again)
    ref = _reference_logprobs(cond, uncond, 5.0, 0.9, **kwargs)
    assert bool(ref.gather(-1, ids[:, None]).isfinite().all())
    torch.testing.assert_close(logp.double(), ref.gather(-1, ids[:, None])[:, 0], atol=5e-5, rtol=1e-5)
    if kwargs.get("top_k") == 1:
        assert torch.equal(ids, guided_logits_reference(cond, uncond, 5.0).argmax(-1))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("case", DISTRIBUTIONS[1::2], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_cuda_empirical_frequencies_match_reference(case):
    n_draws, vocab = 20000, 37
    case = dict(case)
    cfg = case.pop("cfg")
    cond_row = torch.randn(vocab, device="cuda") * 0.6
    uncond_row = torch.randn(vocab, device="cuda") * 0.6
    guidance = 1.5 if cfg else 1.0
    ids, _ = sample(cond_row.expand(n_draws, vocab).contiguous(),
                    uncond_row.expand(n_draws, vocab).contiguous() if cfg else None,
                    guidance=guidance, seed=11, step=0, **case)
    ref = _reference_logprobs(cond_row[None], uncond_row[None] if cfg else None, guidance, **case)[0]
    _check_frequencies(ids, ref, n_draws)


@pytest.mark.gpu
@cuda
def test_cuda_graph_capture_replays_like_eager():
    cond = torch.randn(16, 16384, device="cuda", dtype=torch.bfloat16)
    uncond = torch.randn(16, 16384, device="cuda", dtype=torch.bfloat16)
    step = torch.zeros(1, dtype=torch.int64, device="cuda")
    kwargs = dict(guidance=5.0, top_p=0.9, seed=3, step=step)
    sample(cond, uncond, **kwargs)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, logp = sample(cond, uncond, **kwargs)
    for value in (0, 1, 2):
        step.fill_(value)
        graph.replay()
        eager_ids, eager_logp = sample(cond, uncond, **kwargs)
        assert torch.equal(ids, eager_ids) and torch.equal(logp, eager_logp)
