"""Tuned kernel configurations: the store's fallbacks, and every configuration of a reduced search space
against the float64 torch references (so no tuned configuration can change a result beyond rounding).

The interpreter ignores num_warps / num_stages, so on the CPU the sweep checks what changes the code path:
BLOCK_V (loop trip counts, the masked last chunk), rows per program, tile sizes and fused-linear chunking.
"""

import json
import math
import warnings

import pytest
import torch

from gotr1.kernels import tuning
from gotr1.kernels._grpo_kernels import _row_tiles, backward_rows, forward_rows
from gotr1.kernels._sampling_kernels import _launch_config, launch_sample
from gotr1.kernels.advantages import group_advantages, group_advantages_reference
from gotr1.kernels.fused_linear_grpo import fused_linear_grpo_loss
from gotr1.kernels.grpo_reference import grpo_loss_reference, selective_logprobs_reference
from gotr1.kernels.sampling import guided_logits_reference, kept_mask_reference

DEVICE = "NVIDIA H200"
VALUE_TOL = dict(rtol=2e-5, atol=2e-5)  # as tests/test_grpo_loss.py
GRAD_RTOL = 1e-5  # float32, relative to the largest gradient, as tests/test_grpo_loss.py


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh store reading ``tmp_path/kernels.json``; returns a writer of that file's text."""
    path = tmp_path / "kernels.json"
    monkeypatch.setenv("GOTR1_KERNEL_CONFIGS", str(path))
    tuning.clear_cache()

    def write(data):
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return path

    yield write
    tuning.clear_cache()


def reduced(kernel, **values):
    """Every configuration of ``values`` (a few values per axis of the kernel's space), checked to be in it."""
    spec = tuning.KERNELS[kernel]
    assert set(values) == set(spec.space)
    configs = [{}]
    for key, options in values.items():
        assert set(options) <= set(spec.space[key]), f"{kernel}.{key}: {options} not in the space"
        configs = [{**c, key: v} for c in configs for v in options]
    return configs


# ---------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------


def test_defaults_are_configurations_of_their_spaces():
    for spec in tuning.KERNELS.values():
        assert spec.problem(spec.default) is None, spec.name
        assert spec.configs()[0] == spec.default
        assert len(spec.configs()) == math.prod(len(v) for v in spec.space.values())


def test_missing_file_gives_defaults_silently(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.load_tuned(DEVICE) == {}
        assert tuning.config_for("grpo_forward", DEVICE, V=16384) == tuning.KERNELS["grpo_forward"].default


def test_default_path_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("GOTR1_KERNEL_CONFIGS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tuning.config_path() == tmp_path / "gotr1" / "kernels.json"


def test_valid_config_is_returned_for_its_bucket_only(store):
    best = {"BLOCK_V": 4096, "num_warps": 8, "num_stages": 2}
    store({"version": 1, "devices": {DEVICE: {"grpo_forward": {"V131072": best}}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.config_for("grpo_forward", DEVICE, V=102400) == best
        assert tuning.config_for("grpo_forward", DEVICE, V=16384) == tuning.KERNELS["grpo_forward"].default
        assert tuning.config_for("grpo_backward", DEVICE, V=102400) == tuning.KERNELS["grpo_backward"].default


def test_stale_device_falls_back_and_warns_once(store):
    path = store({"version": 1, "devices": {"NVIDIA A100": {"grpo_forward": {
        "V16384": {"BLOCK_V": 4096, "num_warps": 8, "num_stages": 2}}}}})
    with pytest.warns(RuntimeWarning, match=rf"{path.name}.*no configs for device '{DEVICE}'.*NVIDIA A100"):
        assert tuning.config_for("grpo_forward", DEVICE, V=16384) == tuning.KERNELS["grpo_forward"].default
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # memoised: no second warning
        assert tuning.config_for("grpo_forward", DEVICE, V=16384) == tuning.KERNELS["grpo_forward"].default


@pytest.mark.parametrize(("config", "problem"), [
    ({"BLOCK_V": 3000, "num_warps": 8, "num_stages": 2}, "BLOCK_V=3000 is not one of"),
    ({"BLOCK_V": 4096, "num_warps": 8}, "expected the keys"),
    ({"BLOCK_V": 4096, "num_warps": True, "num_stages": 2}, "num_warps=True"),
    ("fast", "expected the keys"),
])
def test_config_outside_the_space_falls_back_naming_file_and_key(store, config, problem):
    good = {"BLOCK_V": 1024, "num_warps": 2, "num_stages": 4}
    path = store({"version": 1, "devices": {DEVICE: {"grpo_forward": {"V16384": config, "V1024": good}}}})
    with pytest.warns(RuntimeWarning, match=rf"{path.name}.*\['grpo_forward'\]\['V16384'\]: {problem}") as record:
        assert tuning.config_for("grpo_forward", DEVICE, V=16384) == tuning.KERNELS["grpo_forward"].default
    assert len(record) == 1
    assert tuning.config_for("grpo_forward", DEVICE, V=1000) == good  # the valid entry beside it still counts


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"devices": {"x": 3}}'])
def test_malformed_file_falls_back_naming_the_file(store, text):
    path = store(text)
    with pytest.warns(RuntimeWarning, match=path.name):
        assert tuning.load_tuned(DEVICE) == {}
    assert tuning.config_for("sample", DEVICE, B=64, V=16384) == tuning.KERNELS["sample"].default


def test_unknown_kernel_warns(store):
    store({"version": 1, "devices": {DEVICE: {"softmax": {"V16": {"BLOCK": 16}}}}})
    with pytest.warns(RuntimeWarning, match=r"\['softmax'\]: not a known kernel"):
        assert tuning.load_tuned(DEVICE) == {}


def test_save_merges_with_other_devices_and_buckets(store):
    path = store({"version": 1, "devices": {"NVIDIA A100": {"fused_linear": {"V131072_H2048": {"chunk_mib": 256}}},
                                            DEVICE: {"fused_linear": {"V16384_H2048": {"chunk_mib": 1024}}}}})
    tuning.save_tuned(DEVICE, {"fused_linear": {"V131072_H2048": {"chunk_mib": 2048}}})
    devices = json.loads(path.read_text())["devices"]
    assert devices["NVIDIA A100"] == {"fused_linear": {"V131072_H2048": {"chunk_mib": 256}}}
    assert devices[DEVICE]["fused_linear"] == {"V16384_H2048": {"chunk_mib": 1024},
                                               "V131072_H2048": {"chunk_mib": 2048}}
    assert tuning.config_for("fused_linear", DEVICE, V=102400, H=2048) == {"chunk_mib": 2048}


def test_cuda_launchers_ask_the_store(store, monkeypatch):
    """The launchers' CUDA branch reads the device's tuned entry (no GPU needed: the name is preset)."""
    monkeypatch.setitem(tuning._device_names, 0, DEVICE)
    store({"version": 1, "devices": {DEVICE: {
        "grpo_backward": {"V131072": {"BLOCK_V": 16384, "num_warps": 16, "num_stages": 2}},
        "sample": {"B64_V16384": {"ROWS": 2, "num_warps": 8}}}}})
    cuda = torch.device("cuda", 0)
    assert _row_tiles("backward", 102400, cuda) == (1, 16384, {"num_warps": 16, "num_stages": 2})
    assert _row_tiles("forward", 102400, cuda) == (1, 2048, {"num_warps": 4, "num_stages": 3})
    assert _launch_config(64, 16384, cuda) == (2, 4096, 8)
    assert _launch_config(64, 1000, cuda) == (1, 1024, 4)  # default 16 warps, capped at BLOCK / 256


def test_chunk_rows_keeps_the_shipped_rule():
    assert tuning.chunk_rows({"chunk_mib": 512}, 102400, 2) == (1 << 29) // (102400 * 2)


# ---------------------------------------------------------------------------------------------------------
# Every configuration of a reduced space against the float64 references
# ---------------------------------------------------------------------------------------------------------

ROW_CONFIGS = reduced("grpo_forward", BLOCK_V=(512, 2048, 8192), num_warps=(4, 16), num_stages=(2, 3))


def _rows_batch(V, dtype, B=2, T=5):
    logits = (torch.randn(B, T, V) * 2).to(dtype)
    ids = torch.randint(0, V, (B * T,))
    valid = torch.ones(B * T, dtype=torch.uint8)
    valid[[3, 7]] = 0  # padding rows
    return logits, ids, valid


@pytest.mark.parametrize("V", [1000, 5003])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grpo_forward_configs_match_reference(V, dtype):
    logits, ids, valid = _rows_batch(V, dtype)
    expected = selective_logprobs_reference(logits.double(), ids.view(2, -1), 0.7).view(-1)
    expected = torch.where(valid.bool(), expected, 0)
    for config in ROW_CONFIGS:
        _, logp = forward_rows(logits, ids, valid, temperature=0.7, tiles=config)
        torch.testing.assert_close(logp.double(), expected, **VALUE_TOL, msg=lambda m: f"{config}: {m}")


@pytest.mark.parametrize("V", [1000, 5003])
def test_grpo_backward_configs_match_reference(V):
    logits, ids, valid = _rows_batch(V, torch.float32)
    coef = torch.randn(ids.numel()) * valid  # d loss / d logp_t; 0 on padding, as the loss passes it
    scale = torch.rand(2) + 0.5  # per sequence
    x = logits.double().requires_grad_()
    logp = selective_logprobs_reference(x, ids.view(2, -1), 0.7)
    (logp * coef.double().view(2, -1) * scale.double()[:, None]).sum().backward()
    lse, _ = forward_rows(logits, ids, valid, temperature=0.7)
    for config in ROW_CONFIGS:
        got = backward_rows(logits, ids, lse, coef, scale, temperature=0.7, tiles=config)
        torch.testing.assert_close(got.double(), x.grad, rtol=GRAD_RTOL, atol=GRAD_RTOL * x.grad.abs().max().item(),
                                   msg=lambda m: f"{config}: {m}")


def test_fused_linear_configs_match_reference():
    """Each chunk_mib, scaled to the test's tokens so it splits them into as many chunks as it would split the
    chain phase's 64 x 600 tokens (V = 102400, bf16)."""
    B, T, H, V = 3, 20, 16, 1000
    hidden, weight = torch.randn(B, T, H), torch.randn(V, H) / 4
    ids = torch.randint(0, V, (B, T))
    mask = torch.arange(T)[None, :] < torch.tensor([[T], [7], [13]])
    advantages, old = torch.randn(B), torch.randn(B, T) * 0.1 - 7
    ref_logp = old + 0.05
    n_valid = int(mask.sum())
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref_loss, _ = grpo_loss_reference(h64 @ w64.t(), ids, mask, advantages.double(), old.double(), ref_logp.double())
    ref_loss.backward()
    for config in reduced("fused_linear", chunk_mib=(128, 512, 2048)):
        chunks = math.ceil(64 * 600 / tuning.chunk_rows(config, 102400, 2))
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, _ = fused_linear_grpo_loss(h, w, ids, mask, advantages, old, ref_logp,
                                         chunk_size=math.ceil(n_valid / chunks))
        loss.backward()
        torch.testing.assert_close(loss.double(), ref_loss, **VALUE_TOL, msg=lambda m: f"{config}: {m}")
        for got, ref in ((h.grad, h64.grad), (w.grad, w64.grad)):
            torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item(),
                                       msg=lambda m: f"{config}: {m}")


@pytest.mark.parametrize("V", [1000, 5003])
@pytest.mark.parametrize("kwargs", [dict(guidance=5.0), dict(top_k=50), dict(top_p=0.9)])
def test_sample_configs_draw_the_same_ids_as_the_default(V, kwargs):
    """ROWS and num_warps leave the drawn ids unchanged (BLOCK is fixed); logp matches the float64 reference."""
    B, temperature = 5, 0.8
    cond = torch.randn(B, V) * 3
    uncond = torch.randn(B, V) * 3 if "guidance" in kwargs else None
    guidance = kwargs.get("guidance", 1.0)
    run = dict(guidance=guidance, temperature=temperature, top_k=kwargs.get("top_k"), top_p=kwargs.get("top_p"),
               seed=1234, step=3, cond_logprob=False)
    ids_default, _ = launch_sample(cond, uncond, **run)
    z = guided_logits_reference(cond, uncond, guidance).double() / temperature  # g in fp32, as the kernel
    ref = torch.log_softmax(z.masked_fill(~kept_mask_reference(z, run["top_k"], run["top_p"]), -math.inf), -1)
    for config in reduced("sample", ROWS=(1, 2, 4), num_warps=(4, 16)):
        ids, logp = launch_sample(cond, uncond, **run, config=config)
        assert torch.equal(ids, ids_default), f"{config}: {ids} != {ids_default}"
        torch.testing.assert_close(logp.double(), ref.gather(-1, ids[:, None])[:, 0], atol=3e-5, rtol=1e-5,
                                   msg=lambda m: f"{config}: {m}")


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize(("G", "n_groups"), [(16, 37), (5, 3)])
def test_advantages_configs_match_reference(scale, G, n_groups):
    rewards = torch.rand(G * n_groups)
    rewards[::7] = float("nan")
    expected = group_advantages_reference(rewards.double(), G, scale)
    for config in reduced("advantages", BLOCK_ELEMS=(256, 1024, 16384), num_warps=(1, 4)):
        got = group_advantages(rewards, G, scale, config=config)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{config}: {m}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gotr1_tune_kernels_without_a_gpu_says_so_and_exits_2(capsys):
    from gotr1.cli.commands import main

    assert main(["tune-kernels", "--shapes", "image"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# The tuner's loop (the GPU stood in for: what it runs, prunes, reports and writes)
# ---------------------------------------------------------------------------------------------------------


def test_pruning_keeps_the_default_and_leaves_out_what_cannot_win():
    for spec in tuning.KERNELS.values():
        kept, pruned = spec.candidates()
        assert kept[0] == spec.default and len(kept) + len(pruned) == len(spec.configs())
    kept, pruned = tuning.KERNELS["grpo_backward"].candidates()
    assert len(kept) == 18 and {"BLOCK_V": 16384, "num_warps": 2, "num_stages": 3} in [c for c, _ in pruned]
    assert all(c["num_stages"] == 3 for c in kept)


def test_the_tuner_writes_each_case_as_it_finishes_and_times_no_pruned_config(tmp_path, monkeypatch, capsys):
    from gotr1.kernels import tune

    out, ran = tmp_path / "kernels.json", []

    def cases(shape, rows, hidden, device):
        def run(config):
            ran.append(config)
            return (torch.ones(2),)

        yield "grpo_forward", "V=102400", run, 1e-5
        yield "grpo_backward", "V=102400", lambda config: (_ for _ in ()).throw(RuntimeError("device lost")), 1e-5

    fake_ms = lambda fn, **kw: 1.0 if ran[-1] == tuning.KERNELS["grpo_forward"].default else 0.5 + ran[-1]["BLOCK_V"] / 1e5
    monkeypatch.setattr(tune, "_cases", cases)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(tuning, "device_name", lambda device: "Stand-in GPU")
    monkeypatch.setattr("triton.testing.do_bench", fake_ms)
    with pytest.raises(RuntimeError, match="device lost"):  # the second case dies: the first one is on disk
        tune.main(["--shapes", "chain", "--out", str(out)])
    stored = json.loads(out.read_text())["devices"]["Stand-in GPU"]
    assert stored == {"grpo_forward": {"V131072": {"BLOCK_V": 512, "num_warps": 2, "num_stages": 3}}}  # the fastest
    kept, pruned = tuning.KERNELS["grpo_forward"].candidates()
    assert not any(c in ran for c, _ in pruned) and all(c in ran for c in kept)
    progress = capsys.readouterr().err
    assert f"{len(kept)}/{len(kept)}" in progress and "written to" in progress
