"""Batched GoT generation: reasoning chains for prompts x samples, then their images, as one rollout.

GoT-R1's public inference writes one chain at a time, throws its KV cache away, re-prefills prompt and
chain for the image phase and samples with eager ops. Here every (prompt, sample) row of a GRPO group
is generated at once:

1. :func:`generate_chains` left-pads the prompts, prefills them once and decodes all rows together
   against a :class:`~gotr1.kv_decode.RowCache`; a row stops at ``<begin_of_image>`` (appended when it
   reaches ``max_new_tokens``) and stops advancing while the others go on.
2. :func:`~gotr1.image_decode.generate_images` keeps that cache for the conditional rows, prefills only
   the classifier-free-guidance unconditional rows and decodes the image tokens.
3. :func:`~gotr1.image_decode.decode_images` turns image tokens into pixels through the VQ decoder.

:func:`rollout` runs the three and returns a :class:`Rollout`, the unit rewards and GRPO consume.

Prompt format: the GoT-R1 instruction ``Follow the caption to generate an image through a chain of
thought process: {prompt}`` in Janus-Pro's chat format with an empty system prompt,
``<|User|>: {instruction}\\n\\n<|Assistant|>:`` preceded by BOS, which is what GoT-R1's reference
inference builds (``apply_sft_template_for_multi_turn_prompts(..., system_prompt="")``). transformers'
``JanusProcessor`` only appends ``<begin_of_image>`` in image mode and leaves the chat format to the
checkpoint's template, so gotr1 writes the format itself and tokenizes without added special tokens.

Sampling goes through ``gotr1.kernels.sampling.sample``, whose noise is keyed by ``(seed, row, step)``:
row ``i * num_samples + s`` holds sample ``s`` of prompt ``i``, so samples of one prompt differ and a
rollout is reproducible for a fixed seed *and batch layout* (the same prompts in the same order with the
same ``num_samples``). Log-probabilities are float32, of the temperature-scaled distribution.

Departures from GoT-R1's inference: none in what is sampled (the same prompt, temperature-scaled text
distribution, 600-token chain cap and guided image distribution); batching, cache reuse and the random
streams differ, so a seed does not reproduce the reference's pictures. Use: ``rollout(model, processor,
prompts, num_samples)`` with a policy from :func:`gotr1.model.load_policy` (or ``tiny_janus()`` to try it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from gotr1.chain import parse_chain
from gotr1.image_decode import (
    ImageBatch,
    check_guidance,
    check_sampling,
    decode_images,
    generate_images,
    num_image_tokens,
)
from gotr1.kernels.sampling import sample
from gotr1.kv_decode import LlamaStepper, RowCache
from gotr1.model import got_token_ids, janus_parts
from gotr1.teacher_forcing import pad_sequences

__all__ = [
    "PROMPT_TEMPLATE",
    "ChainBatch",
    "ChainFields",
    "ImageBatch",
    "Rollout",
    "decode_images",
    "encode_prompt",
    "format_prompt",
    "generate_chains",
    "generate_images",
    "rollout",
]

# Chain steps between host checks that every row has finished.
_DONE_CHECK_EVERY = 8

PROMPT_TEMPLATE = "Follow the caption to generate an image through a chain of thought process: {prompt}"
CHAT_FORMAT = "<|User|>: {content}\n\n<|Assistant|>:"


def format_prompt(prompt: str) -> str:
    """The chat text of one prompt (without BOS, which :func:`generate_chains` adds as a token)."""
    return CHAT_FORMAT.format(content=PROMPT_TEMPLATE.format(prompt=prompt))


def encode_prompt(tokenizer, prompt: str, bos: int) -> list[int]:
    """Token ids of one prompt as the policy sees it: BOS, then the chat text of :func:`format_prompt`."""
    return [bos] + tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]


@dataclass
class ChainFields:
    """What a rollout knows after the chain phase; ``B = len(prompts) * num_samples`` rows.

    Row ``i * num_samples + s`` is sample ``s`` of prompt ``i`` throughout (``group[row] == i``).

    Attributes
    ----------
    prompts : list of str
        The prompts, one per group.
    num_samples : int
    group : Tensor
        int64 ``[B]``: the prompt index of each row.
    prompt_ids, prompt_mask : Tensor
        int64 / bool ``[B, P]``: BOS + chat text, left-padded.
    chain_ids : Tensor
        int64 ``[B, T]``: the chain tokens, ``<begin_of_image>`` last, right-padded with the pad id.
    chain_mask : Tensor
        bool ``[B, T]``: tokens the policy sampled (those a loss covers); False on padding and on a
        ``<begin_of_image>`` appended at the cap.
    chain_lengths : Tensor
        int64 ``[B]``: tokens per row including ``<begin_of_image>``.
    chain_logprobs : Tensor
        float32 ``[B, T]``: log-probability of each sampled token under ``softmax(logits / temperature)``
        (0 where ``chain_mask`` is False).
    texts : list of str
        Decoded chains (GoT tags kept, ``<begin_of_image>`` dropped).
    chains : list of Chain
        ``parse_chain(text)`` of each row.
    temperature, seed :
        What generated them (GRPO recomputes log-probs at the same temperature).
    """

    prompts: list
    num_samples: int
    group: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chain_ids: torch.Tensor
    chain_mask: torch.Tensor
    chain_lengths: torch.Tensor
    chain_logprobs: torch.Tensor
    texts: list
    chains: list
    temperature: float
    seed: int

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ChainBatch(ChainFields):
    """:class:`ChainFields`, plus the state the image phase continues from.

    Attributes
    ----------
    cache : RowCache or None
        The conditional KV cache, kept for :func:`generate_images`, which consumes it (then None).
    boi_hidden : Tensor or None
        ``[B, H]`` final hidden state at each row's ``<begin_of_image>``: the first image token's input.
    """

    cache: RowCache | None = None
    boi_hidden: torch.Tensor | None = None


@dataclass
class Rollout(ChainFields):
    """One GRPO rollout: :class:`ChainFields` plus the images; the unit rewards and the loss consume.

    Shapes: ``B`` rows, ``N`` image tokens, ``S`` pixels a side.

    Attributes
    ----------
    image_ids : Tensor
        int64 ``[B, N]`` VQ codebook indices, raster order.
    image_logprobs : Tensor
        float32 ``[B, N]`` (conditional branch by default, see :func:`generate_images`).
    images : Tensor or None
        uint8 ``[B, S, S, 3]`` on the CPU; None when the rollout was asked not to decode.
    guidance : float
        The CFG scale of the image phase.
    """

    image_ids: torch.Tensor
    image_logprobs: torch.Tensor
    images: torch.Tensor | None
    guidance: float


def _encode_prompts(janus, tokenizer, prompts, num_samples, max_new_tokens, bos):
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
        if len(ids) + max_new_tokens + 1 + image_tokens > context:
            raise ValueError(
                f"max_new_tokens: {max_new_tokens} chain tokens after the {len(ids)}-token prompts[{i}] "
                f"overflow the context of {context} (with {image_tokens} image tokens)"
            )
        encoded.append(ids)
    return pad_sequences([ids for ids in encoded for _ in range(num_samples)], tokenizer.pad_token_id, left=True)


@torch.no_grad()
def generate_chains(
    model,
    processor,
    prompts: list,
    num_samples: int = 1,
    max_new_tokens: int = 600,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> ChainBatch:
    """Sample GoT reasoning chains for every prompt ``num_samples`` times, in one batch.

    Parameters
    ----------
    model : JanusForConditionalGeneration (or a PEFT wrapper of one), in eval mode
    processor : JanusProcessor holding the GoT tokens (see :func:`gotr1.model.load_policy`)
    prompts : list of str
        Captions, formatted with :func:`format_prompt`.
    num_samples : int
        Chains per prompt (the GRPO group size).
    max_new_tokens : int
        Sampled tokens per chain at most; a row that reaches it without ``<begin_of_image>`` gets one
        appended (outside ``chain_mask``), as GoT-R1's inference does with its cap of 600.
    temperature, top_k, top_p : sampling settings (top-k/p off by default, as in GoT-R1).
    seed : int
        Noise key; see the module docstring for what makes a rollout reproducible.

    Returns
    -------
    ChainBatch
        With the KV cache kept for :func:`generate_images`.
    """
    check_sampling(temperature, top_k, top_p)
    if num_samples < 1:
        raise ValueError(f"num_samples: must be >= 1, got {num_samples}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: must be >= 0, got {max_new_tokens}")
    janus = janus_parts(model)
    tokens = got_token_ids(processor)
    tokenizer = processor.tokenizer
    prompt_ids, prompt_mask = _encode_prompts(janus, tokenizer, prompts, num_samples, max_new_tokens, tokens.bos)
    lm = janus.model.language_model
    device = lm.embed_tokens.weight.device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    embed, head = janus.get_input_embeddings(), janus.lm_head
    stepper = LlamaStepper(lm)
    rows = prompt_ids.shape[0]
    cache = RowCache.allocate(lm, rows, prompt_ids.shape[1] + min(max_new_tokens + 1, 256))

    hidden = stepper.prefill(cache, embed(prompt_ids), prompt_mask)[:, -1]
    chain_ids = torch.full((rows, max_new_tokens + 1), tokens.pad, dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, max_new_tokens + 1), dtype=torch.float32, device=device)
    sampled = torch.zeros((rows, max_new_tokens + 1), dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    boi_hidden = torch.empty_like(hidden)
    live = torch.ones(rows, dtype=torch.bool, device=device)
    for t in range(max_new_tokens + 1):
        if t < max_new_tokens:
            ids, logp = sample(head(hidden), None, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, step=t)
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
        temperature=float(temperature),
        seed=seed,
        cache=cache,
        boi_hidden=boi_hidden,
    )


def rollout(
    model,
    processor,
    prompts: list,
    num_samples: int,
    *,
    max_new_tokens: int = 600,
    temperature: float = 1.0,
    guidance: float = 5.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    logprob_of: str = "cond",
    decode: bool = True,
    cuda_graph: bool = False,
) -> Rollout:
    """Chains, images and pixels for ``prompts`` x ``num_samples`` (GoT-R1's sampling, batched).

    The same ``temperature`` / ``top_k`` / ``top_p`` serve both phases (GoT-R1: 1.0, no filtering);
    ``guidance`` (5, Janus-Pro) and ``logprob_of`` / ``cuda_graph`` go to :func:`generate_images`;
    ``decode=False`` skips the VQ decoder (``images`` is None). The chain seed is ``seed``; the image
    phase draws from its own stream of the same seed. Returns a :class:`Rollout`.
    """
    check_guidance(guidance, logprob_of)
    chains = generate_chains(model, processor, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, seed)
    images = generate_images(
        model,
        processor,
        chains,
        guidance=guidance,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        logprob_of=logprob_of,
        cuda_graph=cuda_graph,
    )
    return Rollout(
        **{f.name: getattr(chains, f.name) for f in fields(ChainFields)},
        image_ids=images.image_ids,
        image_logprobs=images.image_logprobs,
        images=decode_images(model, images.image_ids) if decode else None,
        guidance=images.guidance,
    )
