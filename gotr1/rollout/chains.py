"""The chain phase of a rollout: GoT reasoning chains for prompts x samples, in one batch.

GoT-R1's public inference writes one chain at a time, throws its KV cache away, re-prefills prompt and
chain for the image phase and samples with eager ops. Here every (prompt, sample) row of a GRPO group
is generated at once: :func:`generate_chains` left-pads the prompts (in the format of
:mod:`gotr1.policy.tokens`), prefills them once and decodes all rows together against a
:class:`~gotr1.rollout.kv_cache.RowCache`; a row stops at ``<begin_of_image>`` (appended when it reaches
``Sampling.max_chain_tokens``) and stops advancing while the others go on. The cache is kept for the image
phase (:mod:`gotr1.rollout.images`); :func:`gotr1.rollout.generate.rollout` runs both.

Before the cache is allocated its worst-case size is checked against the device's free memory
(:mod:`gotr1.rollout.memory`). With LoRA, the trained GoT tag rows are merged into the embedding and the text head
once for the whole phase (:func:`gotr1.policy.lora.merged_tag_rows`), not rebuilt by PEFT at every token.

Sampling goes through ``gotr1.kernels.sampling.sample``, whose noise is keyed by ``(seed, row, step)``:
row ``i * num_samples + s`` holds sample ``s`` of prompt ``i``, so samples of one prompt differ and a
rollout is reproducible for a fixed seed *and batch layout* (the same prompts in the same order with the
same ``num_samples``). Log-probabilities are float32, of the temperature-scaled distribution.

Departures from GoT-R1's inference: none in what is sampled (the same prompt, temperature-scaled text
distribution, 600-token chain cap and guided image distribution); batching, cache reuse and the random
streams differ, so a seed does not reproduce the reference's pictures.
"""

from __future__ import annotations

import torch

from gotr1.chain import parse_chain
from gotr1.kernels.sampling import sample
from gotr1.policy.lora import merged_tag_rows
from gotr1.policy.model import got_token_ids, janus_parts, num_image_tokens
from gotr1.policy.precision import compute_dtype
from gotr1.policy.tokens import encode_prompt, pad_sequences
from gotr1.rollout.batches import ChainBatch
from gotr1.rollout.kv_cache import LlamaStepper, RowCache, decoder_weight
from gotr1.rollout.memory import available_bytes, chain_cache_slots, check_rollout_memory
from gotr1.rollout.sampling import Sampling

# Chain steps between host checks that every row has finished.
_DONE_CHECK_EVERY = 8


def _encode_prompts(janus, tokenizer, prompts, num_samples, cap, bos):
    """Left-padded ``[B, P]`` ids and mask, each prompt repeated ``num_samples`` times in a row."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"prompts: expected a non-empty list of str, got {prompts!r}")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: every prompt must be a str")
    context = janus.config.text_config.max_position_embeddings
    image_tokens = num_image_tokens(janus)
    encoded = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt, bos)
        if len(ids) + 1 + image_tokens > context:
            raise ValueError(
                f"prompts[{i}]: {len(ids)} tokens, longer than the context of {context} allows "
                f"(it must leave room for <begin_of_image> and {image_tokens} image tokens)"
            )
        if len(ids) + cap + 1 + image_tokens > context:
            raise ValueError(
                f"max_chain_tokens: {cap} chain tokens after the {len(ids)}-token prompts[{i}] "
                f"overflow the context of {context} (with {image_tokens} image tokens)"
            )
        encoded.append(ids)
    return pad_sequences([ids for ids in encoded for _ in range(num_samples)], tokenizer.pad_token_id, left=True)


def _decode(janus, prompt_ids, prompt_mask, sampling: Sampling, tokens):
    """Prefill the prompts and sample every row's chain: (cache, chain ids, log-probs, sampled mask ``[B, cap + 1]``,
    lengths ``[B]``, hidden state at each ``<begin_of_image>`` ``[B, H]``)."""
    cap = sampling.max_chain_tokens
    lm = janus.model.language_model
    embed, head, stepper = janus.get_input_embeddings(), janus.lm_head, LlamaStepper(lm)
    rows, device = prompt_ids.shape[0], prompt_ids.device
    dtype = compute_dtype(decoder_weight(lm))
    check_rollout_memory(janus.config, rows, prompt_ids.shape[1], sampling, dtype, available_bytes(device))
    cache = RowCache.allocate(lm, rows, chain_cache_slots(prompt_ids.shape[1], cap), dtype=dtype)

    hidden = stepper.prefill(cache, embed(prompt_ids), prompt_mask)[:, -1]
    chain_ids = torch.full((rows, cap + 1), tokens.pad, dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, cap + 1), dtype=torch.float32, device=device)
    sampled = torch.zeros((rows, cap + 1), dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    boi_hidden = torch.empty_like(hidden)
    live = torch.ones(rows, dtype=torch.bool, device=device)
    for t in range(cap + 1):
        if t < cap:
            ids, logp = sample(head(hidden), None, temperature=sampling.temperature, top_k=sampling.top_k,
                               top_p=sampling.top_p, seed=sampling.seed, step=t)
            fed = torch.where(live, ids, tokens.pad)
            logprobs[:, t] = torch.where(live, logp.float(), 0.0)
            sampled[:, t] = live
        else:  # the cap: rows still writing get <begin_of_image> appended
            fed = torch.where(live, tokens.boi, tokens.pad)
        chain_ids[:, t] = fed
        lengths += live
        hidden = stepper.step(cache, embed(fed), live)
        ends = live & (fed == tokens.boi)
        boi_hidden = torch.where(ends[:, None], hidden, boi_hidden)
        live &= ~ends
        # Asking the device whether all rows are done stalls the launch queue, so ask every few steps;
        # finished rows only idle through the extra steps.
        if t % _DONE_CHECK_EVERY == _DONE_CHECK_EVERY - 1 and not bool(live.any()):
            break
    return cache, chain_ids, logprobs, sampled, lengths, boi_hidden


@torch.no_grad()
def generate_chains(model, processor, prompts: list, num_samples: int = 1, sampling: Sampling = Sampling()) -> ChainBatch:
    """Sample GoT reasoning chains for every prompt ``num_samples`` times, in one batch.

    Parameters
    ----------
    model : JanusForConditionalGeneration (or a PEFT wrapper of one), in eval mode
    processor : JanusProcessor holding the GoT tokens (see :func:`gotr1.policy.model.load_policy`)
    prompts : list of str
        Captions, formatted with :func:`gotr1.policy.tokens.format_prompt`.
    num_samples : int
        Chains per prompt (the GRPO group size).
    sampling : Sampling
        ``max_chain_tokens``, ``temperature``, ``top_k``, ``top_p`` and ``seed`` of this phase; the image phase
        reads the rest from the returned batch.

    Returns
    -------
    ChainBatch
        With the KV cache kept for :func:`~gotr1.rollout.images.generate_images`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: must be >= 1, got {num_samples}")
    cap = sampling.max_chain_tokens
    janus = janus_parts(model)
    tokens = got_token_ids(processor)
    tokenizer = processor.tokenizer
    prompt_ids, prompt_mask = _encode_prompts(janus, tokenizer, prompts, num_samples, cap, tokens.bos)
    device = decoder_weight(janus.model.language_model).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    rows = prompt_ids.shape[0]
    with merged_tag_rows(model):
        cache, chain_ids, logprobs, sampled, lengths, boi_hidden = _decode(janus, prompt_ids, prompt_mask, sampling,
                                                                           tokens)
    width = int(lengths.max())
    cache.length = int(cache.cursor.max())  # drop the slots of idle steps from what attention will read
    chain_ids, logprobs, sampled = chain_ids[:, :width], logprobs[:, :width], sampled[:, :width]
    texts = [
        tokenizer.decode(row[: n - 1].tolist(), skip_special_tokens=False)
        for row, n in zip(chain_ids.cpu(), lengths.tolist())
    ]
    return ChainBatch(
        prompts=list(prompts),
        num_samples=num_samples,
        group=torch.arange(len(prompts), device=device).repeat_interleave(num_samples),
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        chain_ids=chain_ids,
        chain_mask=sampled,
        chain_lengths=lengths,
        chain_logprobs=logprobs,
        texts=texts,
        chains=[parse_chain(text) for text in texts],
        image_ids=torch.empty((rows, 0), dtype=torch.long, device=device),
        image_logprobs=torch.empty((rows, 0), dtype=torch.float32, device=device),
        images=None,
        sampling=sampling,
        cache=cache,
        boi_hidden=boi_hidden,
    )

