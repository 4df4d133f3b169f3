"""What the rollout's decode would do on a GPU, checked on the CPU with a dispatch-mode audit (tests/op_audit.py):
the CUDA-graph decode step is capturable (no host sync, no data-dependent shape, no host tensor, no device change),
with and without LoRA, and a LoRA rollout's chain steps copy no weights and no host data (the GoT tag rows are
merged once per phase, not rebuilt per token by PEFT)."""

import pytest
import torch

import gotr1.rollout.images as image_decode
from gotr1.policy import lora
from gotr1.policy.lora import apply_lora, merged_tag_rows
from gotr1.policy.model import tiny_janus
from gotr1.rollout import Sampling, generate_chains, generate_images
from op_audit import OpAudit

PROMPTS = ["a red apple on the left of a blue car", "two cats"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _lora_policy():
    """A tiny LoRA policy whose adapters and tag rows differ from the base (as after some training)."""
    model, processor = tiny_janus(seed=0)
    model = apply_lora(model, processor, rank=4)
    with torch.no_grad():
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval(), processor


@pytest.fixture(scope="module")
def lora_policy():
    return _lora_policy()


def test_the_audit_finds_what_a_capture_cannot_hold():
    """The linter itself: each kind of finding on a one-line offender, nothing on clean device code."""
    x = torch.arange(6.0)
    offenders = {
        "host_sync": lambda: float(x.sum()),
        "data_dependent": lambda: x[x > 2],
        "host_data": lambda: x + torch.tensor([1.0], device=x.device),
    }
    for kind, offend in offenders.items():
        with OpAudit(default_device="meta") as audit:
            offend()
        assert audit.counts[kind] >= 1, f"{kind}: {audit.findings}"
    with pytest.raises(AssertionError, match="without an explicit device"), OpAudit(default_device="meta"):
        x + torch.arange(6)
    with OpAudit(weight_numel=6) as audit:
        x.index_copy(0, torch.arange(2, device=x.device), x[:2])
    assert audit.kinds("weight_copy")
    with OpAudit(weight_numel=6, default_device="meta") as audit:
        torch.where(x > 2, x * 2, 0.0).index_copy_(0, torch.zeros(1, dtype=torch.long, device=x.device), x[:1])
    assert audit.findings == []


@pytest.mark.parametrize("with_lora", [False, True])
def test_the_graph_decode_step_is_capturable(lora_policy, with_lora, monkeypatch):
    """Each captured ``decode_one`` (one per span bucket) is free of host syncs, data-dependent shapes, host
    tensors and device changes: what a CUDA graph capture rejects or silently freezes."""
    model, processor = lora_policy if with_lora else tiny_janus(seed=0)
    audits = []

    def linted_capture(decode_one, span, state, pool):
        saved = [t.clone() for t in state]
        with OpAudit(default_device="meta") as audit:
            decode_one(span)
        audits.append(audit)
        for tensor, copy in zip(state, saved):
            tensor.copy_(copy)

        class Replayed:
            replay = staticmethod(lambda: decode_one(span))
            pool = staticmethod(lambda: None)

        return Replayed()

    monkeypatch.setattr(image_decode, "_capture_graph", linted_capture)
    monkeypatch.setattr(image_decode, "SPAN_BUCKET", 8)
    chains = generate_chains(model, processor, PROMPTS, 2, Sampling(max_chain_tokens=5, seed=1))
    generate_images(model, processor, chains, cuda_graph=True)
    assert len(audits) >= 2, "several span buckets captured"
    for audit in audits:
        assert audit.findings == [], audit.findings


def _chain_audit(model, processor, cap: int) -> OpAudit:
    weight_numel = model.get_base_model().lm_head.weight.numel()
    with OpAudit(weight_numel=weight_numel) as audit:
        chains = generate_chains(model, processor, PROMPTS, 2, Sampling(max_chain_tokens=cap, seed=1))
    assert int(chains.chain_lengths.min()) == cap + 1, "every chain runs to the cap: steps = cap + 1"
    return audit


def test_a_lora_chain_step_copies_no_weight_and_no_host_data(lora_policy):
    """Chain steps of a LoRA policy rebuild no embedding or text-head weight and make no tensor from host data
    (PEFT's layer does both at every call: an index upload and a [V, H] index_copy); the merge of the tag rows
    happens once, whatever the number of steps."""
    short, long = (_chain_audit(*lora_policy, cap) for cap in (3, 11))
    assert short.kinds("weight_copy") == [] and long.kinds("weight_copy") == []
    assert long.kinds("host_data") == short.kinds("host_data"), "host data per step"  # prompts, tag ids: once


def test_without_the_merge_peft_rebuilds_the_weights_every_step(lora_policy, monkeypatch):
    """The audit above can fail: with the merge disabled, PEFT's per-call rebuild shows in every step."""
    monkeypatch.setattr(lora, "_live_trainable_tokens", lambda module: False)
    short, long = (_chain_audit(*lora_policy, cap) for cap in (3, 11))
    assert len(long.kinds("weight_copy")) - len(short.kinds("weight_copy")) >= 2 * 8
    assert len(long.kinds("host_data")) > len(short.kinds("host_data"))


def test_merged_rows_give_peft_s_outputs_and_are_undone(lora_policy):
    model, _ = lora_policy
    embed, head = model.get_input_embeddings(), model.get_base_model().lm_head
    ids = torch.tensor([[300, 4, 6, 7, 8, 9]])  # ordinary tokens and the four GoT tags (ids 6-9)
    hidden = torch.randn(1, 6, model.config.text_config.hidden_size)
    before = [lora.trainable_rows(m)[0].clone() for m in (embed, head)]
    with torch.no_grad():
        expected = embed(ids), head(hidden)
        with merged_tag_rows(model):
            merged = embed(ids), head(hidden)
        after = embed(ids), head(hidden)
    for got, want in zip(merged + after, expected + expected):
        assert torch.equal(got, want)
    for m, weight in zip((embed, head), before):
        base, _, rows = lora.trainable_rows(m)  # None if the layer were left merged
        assert torch.equal(base, weight) and not torch.equal(base[6:10], rows.detach())


def test_a_decode_step_builds_its_attention_mask_once(monkeypatch):
    """Every layer's attention of one decode step reads the same additive (float) mask, built once per step: SDPA
    would otherwise turn a bool mask into a float one at every layer."""
    model, processor = tiny_janus(seed=0)
    masks = []
    attention = torch.nn.functional.scaled_dot_product_attention

    def recorded(*args, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return attention(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
    chains = generate_chains(model, processor, PROMPTS, 1, Sampling(max_chain_tokens=2, seed=1))
    layers = model.config.text_config.num_hidden_layers
    steps = [masks[i:i + layers] for i in range(0, len(masks), layers)]
    assert len(masks) == layers * (1 + 3) and all(s[0].is_floating_point() for s in steps)  # prefill, 3 steps
    assert all(all(m is s[0] for m in s) for s in steps), "one mask object per step, shared by its layers"
    assert chains.chain_ids.shape[1] == 3


def test_the_graph_capture_is_thread_local(monkeypatch):
    """Captures use ``capture_error_mode="thread_local"``: under FSDP2, NCCL's watchdog thread touches CUDA while
    a capture runs, which a global capture mode turns into a failed capture. (CUDA's objects are stood in for.)"""
    from contextlib import contextmanager, nullcontext
    from types import SimpleNamespace

    modes = []

    @contextmanager
    def graph(cuda_graph, pool=None, capture_error_mode="global"):
        modes.append(capture_error_mode)
        yield

    stream = SimpleNamespace(wait_stream=lambda other: None)
    for name, value in (("graph", graph), ("CUDAGraph", lambda: SimpleNamespace()), ("Stream", lambda: stream),
                        ("stream", lambda s: nullcontext()), ("current_stream", lambda: stream)):
        monkeypatch.setattr(torch.cuda, name, value)
    state = [torch.zeros(2)]
    monkeypatch.setattr(type(state[0]), "is_cuda", property(lambda self: True))
    image_decode._capture_graph(lambda span: None, 8, state, None)
    assert modes == ["thread_local"]
