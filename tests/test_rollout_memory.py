"""gotr1.rollout.memory: the KV-cache estimate against what a rollout allocates (tiny model, CPU) and what the
caches of Janus-Pro-1B / 7B take (built on the ``meta`` device), and the early stop with settings that fit."""

import re
from pathlib import Path

import pytest
import torch
from transformers import LlamaModel

import gotr1.grpo.trainer as grpo_trainer
import gotr1.rollout.images as image_decode
from gotr1.grpo.config import GRPOConfig
from gotr1.policy.model import janus_config, tiny_janus
from gotr1.rollout import Sampling, generate_chains, generate_images, kv_cache, memory
from gotr1.rollout.kv_cache import RowCache
from gotr1.rollout.memory import chain_cache_slots, check_rollout_memory, rollout_memory

PROMPTS = ["a red apple on the left of a blue car", "two cats"]


@pytest.mark.usefixtures("one_thread")
def test_the_estimate_is_what_a_rollout_allocates(monkeypatch):
    """A chain that runs to the cap (the estimate's worst case: random weights rarely sample <begin_of_image>)
    sizes both caches; with growth steps of 16 slots, 40-token chains make the chain cache grow twice."""
    monkeypatch.setattr(kv_cache, "GROW_SLOTS", 16)
    monkeypatch.setattr(memory, "GROW_SLOTS", 16)
    model, processor = tiny_janus(seed=0)
    sampling = Sampling(max_chain_tokens=40, seed=1)
    image_caches, continued = [], RowCache.continued

    def recorded(source, rows, capacity):
        cache = continued(source, rows, capacity)
        image_caches.append(cache)
        return cache

    monkeypatch.setattr(image_decode.RowCache, "continued", staticmethod(recorded))
    chains = generate_chains(model, processor, PROMPTS, 2, sampling)
    expected = rollout_memory(model.config, len(chains), chains.prompt_ids.shape[1], sampling, torch.float32)
    assert int(chains.chain_lengths.max()) == sampling.max_chain_tokens + 1
    assert chains.cache.capacity == expected.chain_slots == chain_cache_slots(chains.prompt_ids.shape[1], 40) + 2 * 16
    assert chains.cache.nbytes == expected.chain_bytes
    generate_images(model, processor, chains)
    (image_cache,) = image_caches
    assert (image_cache.rows, image_cache.capacity) == (expected.image_rows, expected.image_slots)
    assert image_cache.nbytes == expected.image_bytes
    assert expected.peak_bytes >= expected.image_bytes > expected.chain_bytes


@pytest.mark.parametrize("preset, slot_kib", [("1b", 192), ("7b", 480)])
def test_the_estimate_of_janus_pro_caches_built_on_meta(preset, slot_kib):
    """Janus-Pro's geometry (layers, key-value heads, head size) in bf16: caches built on ``meta`` by the rollout's
    own code (allocate, then the image cache continuing the chain cache) hold the bytes the estimate gives, and
    GoT-R1's batch (8 prompts x 16 samples, 600-token chains) needs ~60 GB of image cache at 1B."""
    config = janus_config(preset)
    with torch.device("meta"):
        language_model = LlamaModel(config.text_config).to(torch.bfloat16)
    rows, prompt_tokens, sampling = 128, 64, Sampling()
    expected = rollout_memory(config, rows, prompt_tokens, sampling, torch.bfloat16)
    assert expected.slot_bytes == slot_kib * 1024 + 1
    chain = RowCache.allocate(language_model, rows, expected.chain_slots)
    assert chain.nbytes == expected.chain_bytes
    chain.length = prompt_tokens + sampling.max_chain_tokens + 1
    image = RowCache.continued(chain, expected.image_rows, expected.image_slots)
    assert image.nbytes == expected.image_bytes and chain.keys[0] is None
    if preset == "1b":
        assert 55e9 < expected.image_bytes < 65e9 and expected.peak_bytes < expected.image_bytes + expected.chain_bytes


def _fitting(message: str) -> tuple[int, int]:
    cap = int(re.search(r"max_chain_tokens <= (\d+)", message).group(1))
    rows = int(re.search(r"at most (\d+) rows", message).group(1))
    return cap, rows


def test_a_rollout_that_cannot_fit_stops_with_the_settings_that_would():
    config, sampling = janus_config("1b"), Sampling()
    need = rollout_memory(config, 128, 64, sampling, torch.bfloat16)
    assert check_rollout_memory(config, 128, 64, sampling, torch.bfloat16, None) == need  # no device limit: CPU
    assert check_rollout_memory(config, 128, 64, sampling, torch.bfloat16, need.peak_bytes) == need
    available = int(need.peak_bytes * 0.6)
    with pytest.raises(MemoryError, match="max_chain_tokens=600") as err:
        check_rollout_memory(config, 128, 64, sampling, torch.bfloat16, available)
    assert "GiB at the peak" in str(err.value)
    cap, rows = _fitting(str(err.value))

    def peak(rows_, cap_):
        return rollout_memory(config, rows_, 64, Sampling(max_chain_tokens=cap_), torch.bfloat16).peak_bytes

    assert peak(128, cap) <= available < peak(128, cap + 1)
    assert peak(rows, 600) <= available < peak(rows + 1, 600)


def test_the_trainer_refuses_a_rollout_that_cannot_fit_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(grpo_trainer, "available_bytes", lambda device: 100_000)
    config = GRPOConfig(output_dir=str(tmp_path), prompts_per_step=2, group_size=3, max_chain_tokens=12,
                        progress=False, lora_rank=4)
    with pytest.raises(MemoryError, match=r"prompts_per_step x group_size / 1 rank\(s\)"):
        grpo_trainer.GRPOTrainer(*tiny_janus(seed=0), lambda *a: None, config, PROMPTS)


def test_the_readme_states_what_each_shipped_config_needs():
    """README's memory table is the estimate of each shipped config (its batch, chain cap and guidance; prompts of
    64 tokens; bf16), per rank."""
    import yaml

    from gotr1.rollout.kv_cache import slot_bytes

    repo = Path(__file__).resolve().parents[1]
    rows = re.findall(r"^\| `(grpo_janus_pro_\w+)\.yaml` \| (\d+) \| (\d+) \| ([\d.]+) GiB \|",
                      (repo / "README.md").read_text(), re.M)
    assert {name for name, *_ in rows} == {p.stem for p in (repo / "configs").glob("grpo_janus_pro_*.yaml")}
    for name, ranks, per_rank, stated in rows:
        settings = yaml.safe_load((repo / "configs" / f"{name}.yaml").read_text())
        preset = "7b" if "_7b" in name else "1b"
        assert int(per_rank) == settings["prompts_per_step"] // int(ranks) * settings["group_size"], name
        sampling = Sampling(max_chain_tokens=settings["max_chain_tokens"], guidance=settings["guidance"])
        need = rollout_memory(janus_config(preset), int(per_rank), 64, sampling, torch.bfloat16)
        assert f"{need.peak_bytes / 2**30:.1f}" == stated, (name, ranks)
    assert slot_bytes(janus_config("1b").text_config, torch.bfloat16) == 192 * 1024 + 1  # "192 KiB" in the text
