"""One teacher-forced forward over prompt + chain + image tokens: what SFT trains and GRPO re-scores.

The layout is the rollout's (:class:`gotr1.generate.Rollout`): prompts left-padded ``[B, P]``, chains
right-padded ``[B, T]`` with ``<begin_of_image>`` last, then ``N`` image tokens. Padding is masked out of
attention and real tokens get rotary positions 0, 1, ... in order, exactly as generation lays out its
KV cache, so log-probabilities recomputed here equal those generation returned. The forward stops at
the final hidden states; the caller chooses the heads (the text head for chain tokens, the generation
head for image tokens), which lets the GRPO loss fuse the text head into the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gotr1.model import GoTTokens, janus_parts


@dataclass
class TokenBatch:
    """The token layout shared by rollouts and SFT batches (a :class:`~gotr1.generate.Rollout` is one).

    Attributes
    ----------
    prompt_ids, prompt_mask : Tensor
        int64 / bool ``[B, P]``: BOS + chat text, left-padded.
    chain_ids : Tensor
        int64 ``[B, T]``: chain tokens then ``<begin_of_image>``, right-padded.
    chain_lengths : Tensor
        int64 ``[B]``: chain tokens per row including ``<begin_of_image>``.
    image_ids : Tensor
        int64 ``[B, N]``: VQ codebook indices.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chain_ids: torch.Tensor
    chain_lengths: torch.Tensor
    image_ids: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]


def pad_sequences(sequences: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ids and bool mask ``[N, max_len]`` of token lists, padded on the left (prompts) or right (chains)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = True
    return ids, mask


def chain_token_mask(batch) -> torch.Tensor:
    """bool ``[B, T]``: the real chain tokens (``<begin_of_image>`` included) of each row."""
    width = batch.chain_ids.shape[1]
    return torch.arange(width, device=batch.chain_ids.device)[None] < batch.chain_lengths[:, None]


def unconditional(batch, rows: torch.Tensor, tokens: GoTTokens) -> TokenBatch:
    """A copy of ``batch`` where ``rows`` (bool ``[B]``) become classifier-free-guidance rows.

    Janus trains CFG by replacing the caption with padding: such a row keeps BOS and
    ``<begin_of_image>``, every token between becomes the pad token and stays attended, and only its
    image tokens are learned. This mirrors the unconditional rows of :func:`gotr1.generate.generate_images`.
    """
    prompt_ids, chain_ids = batch.prompt_ids.clone(), batch.chain_ids.clone()
    drop_prompt = rows[:, None] & batch.prompt_mask & (prompt_ids != tokens.bos)
    prompt_ids[drop_prompt] = tokens.pad
    real = chain_token_mask(batch)
    last = torch.arange(chain_ids.shape[1], device=chain_ids.device)[None] == (batch.chain_lengths - 1)[:, None]
    chain_ids[rows[:, None] & real & ~last] = tokens.pad
    return TokenBatch(prompt_ids, batch.prompt_mask, chain_ids, batch.chain_lengths, batch.image_ids)


# Set by :func:`gotr1.sharding.shard_policy` on an FSDP-sharded policy: :func:`forward_hidden` registered as a
# forward method of the root, so that it gathers the root's parameters first.
SHARDED_FORWARD = "gotr1_teacher_forced_hidden"


def teacher_forced_hidden(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states that predict each chain token and each image token.

    Parameters
    ----------
    model : JanusForConditionalGeneration or a PEFT wrapper of one
    batch : TokenBatch or Rollout

    Returns
    -------
    chain_hidden : Tensor
        ``[B, T, H]``: ``chain_hidden[b, t]`` predicts ``chain_ids[b, t]`` (through the text head).
    image_hidden : Tensor
        ``[B, N, H]``: ``image_hidden[b, n]`` predicts ``image_ids[b, n]`` (through the generation head);
        image token 0 is predicted at each row's ``<begin_of_image>``.
    """
    sharded = model.__dict__.get(SHARDED_FORWARD)
    return forward_hidden(model, batch) if sharded is None else sharded(batch)


def forward_hidden(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`teacher_forced_hidden` of an unsharded policy (the sharded one runs it inside FSDP's hooks)."""
    janus = janus_parts(model)
    width, chain_width = batch.prompt_ids.shape[1], batch.chain_ids.shape[1]
    lengths = batch.chain_lengths
    text_ids = torch.cat([batch.prompt_ids, batch.chain_ids], dim=1)
    embeds = torch.cat(
        [janus.get_input_embeddings()(text_ids), janus.prepare_embeddings_for_image_generation(batch.image_ids)], dim=1
    )
    mask = torch.cat([batch.prompt_mask, chain_token_mask(batch), torch.ones_like(batch.image_ids, dtype=torch.bool)], 1)
    position_ids = (mask.long().cumsum(1) - 1).clamp_min(0)
    # Called on the language model itself: the Janus wrapper would also run the vision tower and the text head.
    hidden = janus.model.language_model(
        inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids, use_cache=False
    ).last_hidden_state
    chain_hidden = hidden[:, width - 1 : width + chain_width - 1]
    rows = torch.arange(len(lengths), device=lengths.device)
    image_hidden = torch.cat([hidden[rows, width + lengths - 1][:, None], hidden[:, width + chain_width : -1]], dim=1)
    return chain_hidden, image_hidden
