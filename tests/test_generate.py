"""gotr1.rollout: parity with transformers, log-probs vs teacher forcing, seeding, errors."""

import dataclasses

import pytest
import torch
from transformers import StaticCache

from gotr1.chain import Chain
from gotr1.policy.forward import teacher_forced_hidden
from gotr1.policy.model import cache_keyword, got_token_ids, tiny_janus
from gotr1.policy.tokens import format_prompt
from gotr1.rollout import ChainBatch, Rollout, Sampling, decode_images, generate_chains, generate_images, rollout

SAMPLING_FIELDS = {f.name for f in dataclasses.fields(Sampling)}

PROMPTS = [
    "a red apple on the left of a blue car",
    "two cats",
    "a wooden table and a glass vase near the window, a fluffy dog sitting below",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _boost_begin_of_image(model, processor, amount: float) -> None:
    """Raise the ``<begin_of_image>`` logit by about ``amount`` along the mean hidden state.

    Random weights almost never emit ``<begin_of_image>``; with the boost, chains stop at varied
    lengths, so batches mix finished and running rows.
    """
    tokenizer = processor.tokenizer
    ids = torch.tensor([tokenizer(format_prompt(PROMPTS[2]))["input_ids"]], device=model.device)
    with torch.no_grad():
        direction = model.model.language_model(input_ids=ids).last_hidden_state[0].mean(0)
        model.lm_head.weight[got_token_ids(processor).boi] += amount * direction / direction.norm() ** 2


def _boosted(amount: float):
    model, processor = tiny_janus(seed=0)
    _boost_begin_of_image(model, processor, amount)
    return model, processor


@pytest.fixture(scope="module")
def policy():
    """Sampled chains stop after a few tokens or run to a cap of 12: batches mix both."""
    return _boosted(5.5)


def _with_varied_lengths(generate):
    """``generate(seed)`` for the first seed whose chains end at different steps (the point of the test)."""
    for seed in range(5, 10):
        out = generate(seed)
        if len(set(out.chain_lengths.tolist())) > 1:
            return out
    pytest.fail("no seed in 5..9 gave chains of different lengths; raise the <begin_of_image> boost")


def _rollout(policy, prompts=PROMPTS, num_samples=2, **kwargs):
    """A rollout with 12-token chains and seed 5 unless ``kwargs`` say otherwise (Sampling fields or options)."""
    settings = {"max_chain_tokens": 12, "seed": 5, **{k: v for k, v in kwargs.items() if k in SAMPLING_FIELDS}}
    options = {"decode": False, **{k: v for k, v in kwargs.items() if k not in SAMPLING_FIELDS}}
    return rollout(*policy, prompts, num_samples, Sampling(**settings), **options)


# ---------------------------------------------------------------------------------------------
# Parity with transformers
# ---------------------------------------------------------------------------------------------


def assert_greedy_rows_agree(got: list[list[int]], expected: list[list[int]], what: str) -> None:
    """Greedy decodes of two code paths (or batch shapes) agree, up to what float rounding can flip.

    Their logits differ in the last bits, so on some machine a near-tie may flip one token and the row goes
    its own way after it. A real bug (a wrong cache, mask or position) breaks the first token of most rows:
    so every row must agree on its first token, and at least three quarters of the rows entirely.
    """
    assert len(got) == len(expected)
    first = [r for r, (g, e) in enumerate(zip(got, expected)) if g[:1] != e[:1]]
    whole = [r for r, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not first, f"{what}: rows {first} differ from their first token"
    assert len(whole) <= len(got) // 4, f"{what}: rows {whole} differ"


def test_greedy_chains_match_transformers_generate():
    model, processor = _boosted(4.5)  # greedy chains of 3 to 11 tokens
    ids = got_token_ids(processor)
    cap = 24
    chains = generate_chains(model, processor, PROMPTS, sampling=Sampling(max_chain_tokens=cap, top_k=1))
    lengths = chains.chain_lengths.tolist()
    assert min(lengths) < cap + 1, "some chain should stop on its own"
    reference = model.generate(
        input_ids=chains.prompt_ids,
        attention_mask=chains.prompt_mask.long(),
        max_new_tokens=cap,
        do_sample=False,
        eos_token_id=ids.boi,
        pad_token_id=ids.pad,
    )[:, chains.prompt_ids.shape[1] :]
    got, expected = [], []
    for row, n in enumerate(lengths):
        want = reference[row].tolist()
        expected.append(want[: want.index(ids.boi) + 1] if ids.boi in want else want + [ids.boi])
        got.append(chains.chain_ids[row, :n].tolist())
        assert chains.chain_mask[row, :n].all() == (n <= cap), f"row {row}: mask of a {'capped' if n > cap else 'stopped'} chain"
    assert_greedy_rows_agree(got, expected, "chains")
    assert chains.texts[0] == processor.tokenizer.decode(chains.chain_ids[0, : lengths[0] - 1])


def test_greedy_images_match_transformers_generate(policy):
    """Same prefix (prompt + sampled chain + <begin_of_image>), same guidance: the same image tokens."""
    model, processor = policy
    chains = _with_varied_lengths(
        lambda seed: generate_chains(model, processor, PROMPTS, num_samples=2, sampling=Sampling(max_chain_tokens=10, seed=seed))
    )
    prefixes = [
        torch.cat([chains.prompt_ids[r][chains.prompt_mask[r]], chains.chain_ids[r, :n]])
        for r, n in enumerate(chains.chain_lengths.tolist())
    ]
    chains.sampling = dataclasses.replace(chains.sampling, guidance=5.0, top_k=1)  # a greedy image phase
    images = generate_images(model, processor, chains)
    steps = model.config.vision_config.num_image_tokens
    got, want = [], []
    for row, prefix in enumerate(prefixes):
        # A cache of our own: transformers 5.17's image-mode generate fails to build its default one.
        cache = StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=len(prefix) + steps)
        expected = model.generate(
            prefix[None],
            attention_mask=torch.ones_like(prefix)[None],
            generation_mode="image",
            do_sample=False,
            guidance_scale=5.0,
            **{cache_keyword(model): cache},
        )
        got.append(images.image_ids[row].tolist())
        want.append(expected[0].tolist())
    assert_greedy_rows_agree(got, want, "image tokens")


# ---------------------------------------------------------------------------------------------
# Log-probabilities: what GRPO's teacher-forced forward recomputes
# ---------------------------------------------------------------------------------------------


def _teacher_forced_logprobs(model, r: Rollout):
    """One forward over prompt + chain + image tokens (what SFT and GRPO run); chain and conditional image log-probs."""
    with torch.no_grad():
        chain_hidden, image_hidden = teacher_forced_hidden(model, r)
    chain_lp = (model.lm_head(chain_hidden).float() / r.sampling.temperature).log_softmax(-1)
    image_lp = (model.model.generation_head(image_hidden).float() / r.sampling.temperature).log_softmax(-1)
    return chain_lp.gather(2, r.chain_ids[..., None])[..., 0], image_lp.gather(2, r.image_ids[..., None])[..., 0]


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_logprobs_equal_teacher_forcing(policy, guidance):
    model, _ = policy
    r = _with_varied_lengths(lambda seed: _rollout(policy, temperature=0.7, guidance=guidance, seed=seed))
    assert r.chain_logprobs.dtype == r.image_logprobs.dtype == torch.float32
    chain_lp, image_lp = _teacher_forced_logprobs(model, r)
    m = r.chain_mask
    torch.testing.assert_close(r.chain_logprobs[m], chain_lp[m], atol=1e-4, rtol=0, msg="chain log-probs")
    assert torch.all(r.chain_logprobs[~m] == 0)
    torch.testing.assert_close(r.image_logprobs, image_lp, atol=1e-4, rtol=0, msg="image log-probs (conditional)")


# ---------------------------------------------------------------------------------------------
# Seeding, layout, the cap
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_rollout_other_seed_differs(policy):
    a = _rollout(policy, decode=True)
    b = _rollout(policy, decode=True)
    for name in ("chain_ids", "chain_mask", "chain_logprobs", "image_ids", "image_logprobs", "images"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.texts == b.texts
    c = _rollout(policy, seed=6)
    assert not torch.equal(a.image_ids, c.image_ids)


def test_samples_of_one_prompt_differ(policy):
    r = _rollout(policy, prompts=PROMPTS[:1], num_samples=4)
    rows = [(r.texts[i], tuple(r.image_ids[i].tolist())) for i in range(4)]
    assert len({text for text, _ in rows}) == 4, "chains of one prompt must differ"
    assert len({image for _, image in rows}) == 4, "images of one prompt must differ"


def test_rollout_layout(policy):
    r = _rollout(policy, decode=True)
    rows = len(PROMPTS) * 2
    assert isinstance(r, Rollout) and len(r) == rows
    assert r.group.tolist() == [0, 0, 1, 1, 2, 2]
    assert r.prompts == PROMPTS and r.num_samples == 2 and r.sampling.guidance == 5.0
    assert r.prompt_ids.shape == r.prompt_mask.shape and r.prompt_ids.shape[0] == rows
    assert r.prompt_mask[:, -1].all(), "prompts are left-padded"
    assert torch.equal(r.prompt_ids[0], r.prompt_ids[1])
    boi = r.chain_ids[torch.arange(rows), r.chain_lengths - 1]
    assert torch.all(boi == got_token_ids(policy[1]).boi), "every chain ends with <begin_of_image>"
    assert r.image_ids.shape == (rows, 16) and r.image_ids.dtype == torch.int64
    assert r.images.shape == (rows, 64, 64, 3) and r.images.dtype == torch.uint8
    assert all(isinstance(c, Chain) and c.text == t for c, t in zip(r.chains, r.texts))


def test_cap_appends_begin_of_image_outside_the_mask():
    model, processor = tiny_janus(seed=0)  # unboosted: <begin_of_image> is never sampled in 5 steps
    boi = got_token_ids(processor).boi
    chains = generate_chains(model, processor, PROMPTS[:2], num_samples=2, sampling=Sampling(max_chain_tokens=5))
    assert chains.chain_lengths.tolist() == [6] * 4
    assert torch.all(chains.chain_ids[:, -1] == boi)
    assert chains.chain_mask[:, :5].all() and not chains.chain_mask[:, 5].any()
    assert torch.all(chains.chain_logprobs[:, 5] == 0)
    empty = generate_chains(model, processor, PROMPTS[:1], sampling=Sampling(max_chain_tokens=0))
    assert empty.chain_ids.tolist() == [[boi]] and empty.texts == [""]
    images = generate_images(model, processor, empty)
    assert images.image_ids.shape == (1, 16)


def test_chain_cache_is_consumed_once(policy):
    chains = generate_chains(*policy, PROMPTS[:1], sampling=Sampling(max_chain_tokens=4))
    assert isinstance(chains, ChainBatch) and chains.cache is not None
    generate_images(*policy, chains)
    assert chains.cache is None
    with pytest.raises(ValueError, match="chains"):
        generate_images(*policy, chains)


def test_decode_images_matches_the_vq_decoder(policy):
    model, _ = policy
    ids = torch.randint(0, 512, (3, 16))
    pixels = decode_images(model, ids, batch_size=2)
    assert pixels.shape == (3, 64, 64, 3) and pixels.dtype == torch.uint8
    with torch.no_grad():
        expected = ((model.decode_image_tokens(ids) + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    # Decoding in chunks of 2 changes the convolutions' batch shape, so a float landing near a uint8 step
    # may truncate to its neighbour on some machines: one step, on a handful of pixels. A real bug (another
    # image, a wrong scale or offset) moves most pixels by far more.
    difference = (pixels.int() - expected.int()).abs()
    assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 0.01
    with pytest.raises(ValueError, match="image_ids"):
        decode_images(model, ids[:, :15])
    with pytest.raises(ValueError, match="image_ids"):
        decode_images(model, ids + 512)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"prompts": []}, "prompts"),
        ({"prompts": "a cat"}, "prompts"),
        ({"prompts": ["a cat", 3]}, "prompts"),
        ({"prompts": ["a cat", "cat " * 1200]}, r"prompts\[1\]"),
        ({"max_chain_tokens": 5000}, "max_chain_tokens"),
        ({"num_samples": 0}, "num_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"guidance": 0.5}, "guidance"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"logprob_of": "uncond"}, "logprob_of"),
    ],
)
def test_bad_input_names_the_field(policy, kwargs, field):
    with pytest.raises(ValueError, match=field):
        _rollout(policy, **kwargs)


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager():
    model, processor = tiny_janus(seed=0)
    model.to("cuda")
    _boost_begin_of_image(model, processor, 4.5)
    eager = _rollout((model, processor), top_k=1, decode=True)
    graphed = _rollout((model, processor), top_k=1, decode=True, cuda_graph=True)
    assert torch.equal(eager.chain_ids, graphed.chain_ids)
    assert torch.equal(eager.image_ids, graphed.image_ids)
    torch.testing.assert_close(eager.image_logprobs, graphed.image_logprobs, atol=1e-4, rtol=0)
    sampled = _rollout((model, processor), cuda_graph=True)
    chain_lp, image_lp = _teacher_forced_logprobs(model, sampled)
    torch.testing.assert_close(sampled.image_logprobs, image_lp, atol=1e-4, rtol=0)
    torch.testing.assert_close(sampled.chain_logprobs[sampled.chain_mask], chain_lp[sampled.chain_mask], atol=1e-4, rtol=0)


class _EagerGraph:
    """Stands in for a captured CUDA graph on the CPU: replay runs the captured call eagerly."""

    def __init__(self, run):
        self.replay = run

    def pool(self):
        return None


def test_graph_path_logic_on_cpu(policy, monkeypatch):
    """The CUDA-graph path (fixed attention spans in buckets, warm-up undone) reproduces eager decoding."""
    import gotr1.rollout.images as image_decode

    captured = []

    def fake_capture(decode_one, span, state, pool):
        saved = [t.clone() for t in state]
        decode_one(span)  # the warm-up, as the real capture runs it
        for tensor, copy in zip(state, saved):
            tensor.copy_(copy)
        captured.append(span)
        return _EagerGraph(lambda: decode_one(span))

    monkeypatch.setattr(image_decode, "_capture_graph", fake_capture)
    monkeypatch.setattr(image_decode, "SPAN_BUCKET", 8)
    eager = _rollout(policy, prompts=PROMPTS[:2])
    graphed = _rollout(policy, prompts=PROMPTS[:2], cuda_graph=True)
    assert len(captured) > 1 and captured == sorted(set(captured)), "one capture per span bucket, growing"
    assert torch.equal(eager.image_ids, graphed.image_ids)
    torch.testing.assert_close(eager.image_logprobs, graphed.image_logprobs, atol=1e-5, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_cuda_graph_needs_cuda(policy):
    with pytest.raises(ValueError, match="cuda_graph"):
        _rollout(policy, prompts=PROMPTS[:1], num_samples=1, max_chain_tokens=2, cuda_graph=True)
