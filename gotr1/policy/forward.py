"""One teacher-forced forward over prompt + chain + image tokens: what SFT trains and GRPO re-scores.

The layout is :class:`gotr1.policy.tokens.TokenBatch`'s: prompts left-padded ``[B, P]``, chains
right-padded ``[B, T]`` with ``<begin_of_image>`` last, then ``N`` image tokens. Padding is masked out of
attention and real tokens get rotary positions 0, 1, ... in order, exactly as generation lays out its
KV cache, so log-probabilities recomputed here equal those generation returned. The forward stops at
the final hidden states; the caller chooses the heads (the text head for chain tokens, the generation
head for image tokens), which lets the GRPO loss fuse the text head into the loss.
"""

from __future__ import annotations

import torch

from gotr1.policy.model import janus_parts
from gotr1.policy.tokens import TokenBatch, chain_token_mask

# Set by :func:`gotr1.policy.sharding.shard_policy` on an FSDP-sharded policy: :func:`forward_hidden` registered as a
# forward method of the root, so that it gathers the root's parameters first.
SHARDED_FORWARD = "gotr1_teacher_forced_hidden"


def teacher_forced_hidden(model, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states that predict each chain token and each image token.

    Parameters
    ----------
    model : JanusForConditionalGeneration or a PEFT wrapper of one
    batch : TokenBatch (a Rollout is one)

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


def forward_hidden(model, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
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
