"""The GRPO update over a rollout: chain and image tokens of a sequence normalised together, micro-batched.

Chain tokens are scored through the text head (fused into the loss with
:func:`~gotr1.kernels.grpo_loss.fused_linear_grpo_loss`, so ``[B, T, 102400]`` logits never exist), image
tokens through the generation head (:func:`~gotr1.kernels.grpo_loss.grpo_loss`). Both return per-sequence
loss sums and token counts; this module adds them per sequence and applies the ``loss_type`` normalisation
over the whole (possibly multi-rank) batch, so micro-batching and sharding change nothing but rounding.
With ``importance_level="sequence"`` the ratio is computed separately over a sequence's chain tokens and its
image tokens (one call each): the two heads are scored apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gotr1.kernels.grpo_loss import METRIC_NAMES, fused_linear_grpo_loss, grpo_loss, selective_logprobs
from gotr1.policy.forward import teacher_forced_hidden
from gotr1.policy.model import GoTTokens, janus_parts
from gotr1.policy.tokens import LogProbs, TokenBatch, unconditional


@dataclass(frozen=True)
class LossNormalizer:
    """How summed token losses become the loss, over the whole (possibly multi-rank) batch.

    ``per_sequence``: divide each sequence's sum by its token count, then everything by ``scale`` (``grpo``);
    otherwise divide the sum by ``scale`` (``bnpo``: all tokens; ``dr_grpo``: ``B * max_len``).
    """

    per_sequence: bool
    scale: float


def text_head_weight(janus) -> torch.Tensor:
    """The text head's effective ``[V, H]`` weight, trained GoT tag rows of a LoRA policy included."""
    head = janus.lm_head
    if hasattr(head, "get_merged_weights") and not getattr(head, "disable_adapters", False):
        return head.get_merged_weights(head.active_adapters)
    return head.weight


def image_logits(model, batch: TokenBatch, image_hidden: torch.Tensor, guidance: float | None, tokens: GoTTokens):
    """Generation-head logits ``[B, N, V_img]``; CFG-mixed ``u + s (c - u)`` when ``guidance`` is given."""
    janus = janus_parts(model)
    cond = janus.model.generation_head(image_hidden)
    if guidance is None:
        return cond
    everything = torch.ones(len(batch), dtype=torch.bool, device=batch.prompt_ids.device)
    _, uncond_hidden = teacher_forced_hidden(model, unconditional(batch, everything, tokens))
    uncond = janus.model.generation_head(uncond_hidden)
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def policy_logprobs(model, batch: TokenBatch, config, tokens: GoTTokens) -> LogProbs:
    """Log-probs of the batch's tokens under ``model`` (old or reference policy), micro-batched, no grad."""
    janus = janus_parts(model)
    guidance = config.guidance if config.cfg_in_loss else None
    chains, images = [], []
    for start in range(0, len(batch), config.micro_batch_size):
        part = batch.rows(slice(start, start + config.micro_batch_size))
        chain_hidden, image_hidden = teacher_forced_hidden(model, part)
        chains.append(selective_logprobs(janus.lm_head(chain_hidden), part.chain_ids, config.temperature))
        logits = image_logits(model, part, image_hidden, guidance, tokens)
        images.append(selective_logprobs(logits, part.image_ids, config.temperature))
    return LogProbs(torch.cat(chains), torch.cat(images))


def loss_normalizer(batch: TokenBatch, config, world_batch: int, world_tokens: int) -> LossNormalizer:
    """The :class:`LossNormalizer` of ``config.loss_type`` for a batch of ``world_batch`` sequences holding
    ``world_tokens`` scored tokens over every rank."""
    if config.loss_type == "grpo":
        return LossNormalizer(per_sequence=True, scale=float(world_batch))
    if config.loss_type == "bnpo":
        return LossNormalizer(per_sequence=False, scale=float(max(world_tokens, 1)))
    max_len = (batch.chain_ids.shape[1] if config.chain_loss else 0) + (batch.image_ids.shape[1] if config.image_loss else 0)
    return LossNormalizer(per_sequence=False, scale=float(world_batch * max_len))


def loss_and_backward(model, batch: TokenBatch, advantages: torch.Tensor, *, old: LogProbs | None,
                      ref: LogProbs | None, config, normalizer: LossNormalizer, tokens: GoTTokens) -> dict:
    """Forward + backward of the GRPO loss over ``batch`` in micro-batches; gradients accumulate.

    Chain tokens are scored where ``batch.chain_mask`` is True (in a rollout, the tokens the policy sampled:
    a ``<begin_of_image>`` appended at the length cap was not sampled and is not scored). ``old`` / ``ref``
    are the old and reference policies' log-probs (None: the current policy's, detached / no KL term).
    Returns the summed loss contribution and token-weighted metric sums (divide by ``num_tokens``).
    """
    janus = janus_parts(model)
    guidance = config.guidance if config.cfg_in_loss else None
    common = dict(eps_low=config.eps_low, eps_high=config.eps_high, delta=config.delta, beta=config.beta,
                  loss_type="grpo", importance_level=config.importance_level, reduction="none")
    device_type = batch.prompt_ids.device.type  # not the head's weight: a LoRA head merges it on access
    totals = {"loss": 0.0, "num_tokens": 0.0, **{name: 0.0 for name in METRIC_NAMES}}
    for start in range(0, len(batch), config.micro_batch_size):
        index = slice(start, start + config.micro_batch_size)
        part, adv = batch.rows(index), advantages[index]
        part_old, part_ref = (None if old is None else old.rows(index)), (None if ref is None else ref.rows(index))
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            chain_hidden, image_hidden = teacher_forced_hidden(model, part)
        sums, counts, metrics = [], [], []
        if config.chain_loss:
            weight = text_head_weight(janus)
            loss, m = fused_linear_grpo_loss(
                chain_hidden.to(weight.dtype), weight, part.chain_ids, part.chain_mask, adv,
                None if part_old is None else part_old.chain, None if part_ref is None else part_ref.chain,
                temperature=config.temperature, **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
        if config.image_loss:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
                logits = image_logits(model, part, image_hidden, guidance, tokens)
            loss, m = grpo_loss(
                logits, part.image_ids, torch.ones_like(part.image_ids, dtype=torch.bool), adv,
                None if part_old is None else part_old.image, None if part_ref is None else part_ref.image,
                temperature=config.temperature, **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
        seq_sum, seq_count = sum(sums), sum(counts).to(torch.float32)
        if normalizer.per_sequence:
            loss = (seq_sum / seq_count.clamp_min(1)).sum() / normalizer.scale
        else:
            loss = seq_sum.sum() / normalizer.scale
        loss.backward()
        totals["loss"] += float(loss.detach())
        for m in metrics:
            n = float(m["num_tokens"])
            totals["num_tokens"] += n
            for name in METRIC_NAMES:
                totals[name] += float(m[name]) * n
    return totals
