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

from gotr1.kernels.grpo_loss import fused_linear_grpo_loss, grpo_loss, selective_logprobs
from gotr1.model import janus_parts
from gotr1.teacher_forcing import TokenBatch, teacher_forced_hidden, unconditional

METRIC_NAMES = ("ratio_mean", "clip_low_frac", "clip_high_frac", "dual_clip_frac", "kl_mean")


@dataclass
class LogProbs:
    """float32 log-probs of a batch's chain tokens ``[B, T]`` and image tokens ``[B, N]``."""

    chain: torch.Tensor
    image: torch.Tensor

    def rows(self, index: slice) -> "LogProbs":
        return LogProbs(self.chain[index], self.image[index])


def text_head_weight(janus) -> torch.Tensor:
    """The text head's effective ``[V, H]`` weight, trained GoT tag rows of a LoRA policy included."""
    head = janus.lm_head
    if hasattr(head, "get_merged_weights") and not getattr(head, "disable_adapters", False):
        return head.get_merged_weights(head.active_adapters)
    return head.weight


def image_logits(model, batch: TokenBatch, image_hidden: torch.Tensor, guidance: float | None, uncond_tokens):
    """Generation-head logits ``[B, N, V_img]``; CFG-mixed ``u + s (c - u)`` when ``guidance`` is given."""
    janus = janus_parts(model)
    cond = janus.model.generation_head(image_hidden)
    if guidance is None:
        return cond
    everything = torch.ones(len(batch), dtype=torch.bool, device=batch.prompt_ids.device)
    _, uncond_hidden = teacher_forced_hidden(model, unconditional(batch, everything, uncond_tokens))
    uncond = janus.model.generation_head(uncond_hidden)
    return uncond + guidance * (cond - uncond)


def slice_batch(batch, index: slice) -> TokenBatch:
    return TokenBatch(batch.prompt_ids[index], batch.prompt_mask[index], batch.chain_ids[index],
                      batch.chain_lengths[index], batch.image_ids[index])


@torch.no_grad()
def policy_logprobs(model, batch, config, micro_batch_size: int, uncond_tokens) -> LogProbs:
    """Log-probs of the batch's tokens under ``model`` (old or reference policy), micro-batched, no grad."""
    janus = janus_parts(model)
    guidance = config.guidance if config.cfg_in_loss else None
    chains, images = [], []
    for start in range(0, len(batch), micro_batch_size):
        part = slice_batch(batch, slice(start, start + micro_batch_size))
        chain_hidden, image_hidden = teacher_forced_hidden(model, part)
        chains.append(selective_logprobs(janus.lm_head(chain_hidden), part.chain_ids, config.temperature))
        logits = image_logits(model, part, image_hidden, guidance, uncond_tokens)
        images.append(selective_logprobs(logits, part.image_ids, config.temperature))
    return LogProbs(torch.cat(chains), torch.cat(images))


def loss_normalizer(batch, config, world_batch: int, world_tokens: int) -> tuple[str, float]:
    """How summed token losses become the loss: per sequence (``grpo``) or by one constant.

    Returns ``("sequence", B)`` for ``grpo`` (divide each sequence by its token count, then by B) or
    ``("constant", c)`` for ``bnpo`` (c = all tokens) and ``dr_grpo`` (c = B * max_len).
    """
    if config.loss_type == "grpo":
        return "sequence", float(world_batch)
    if config.loss_type == "bnpo":
        return "constant", float(max(world_tokens, 1))
    max_len = (batch.chain_ids.shape[1] if config.chain_loss else 0) + (batch.image_ids.shape[1] if config.image_loss else 0)
    return "constant", float(world_batch * max_len)


def loss_and_backward(model, batch, chain_mask, advantages, old: LogProbs | None, ref: LogProbs | None, config,
                      normalizer, uncond_tokens) -> dict:
    """Forward + backward of the GRPO loss over ``batch`` in micro-batches; gradients accumulate.

    ``chain_mask`` bool ``[B, T]`` marks the chain tokens the policy sampled (a ``<begin_of_image>`` appended
    at the length cap was not sampled and is not scored). Returns the summed loss contribution and
    token-weighted metric sums (divide by ``num_tokens``).
    """
    janus = janus_parts(model)
    kind, scale = normalizer
    guidance = config.guidance if config.cfg_in_loss else None
    common = dict(eps_low=config.eps_low, eps_high=config.eps_high, delta=config.delta, beta=config.beta,
                  loss_type="grpo", importance_level=config.importance_level, reduction="none")
    device_type = batch.prompt_ids.device.type  # not the head's weight: a LoRA head merges it on access
    totals = {"loss": 0.0, "num_tokens": 0.0, **{name: 0.0 for name in METRIC_NAMES}}
    for start in range(0, len(batch), config.micro_batch_size):
        index = slice(start, start + config.micro_batch_size)
        part, adv = slice_batch(batch, index), advantages[index]
        part_old, part_ref = (None if old is None else old.rows(index)), (None if ref is None else ref.rows(index))
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            chain_hidden, image_hidden = teacher_forced_hidden(model, part)
        sums, counts, metrics = [], [], []
        if config.chain_loss:
            weight = text_head_weight(janus)
            loss, m = fused_linear_grpo_loss(
                chain_hidden.to(weight.dtype), weight, part.chain_ids, chain_mask[index], adv,
                None if part_old is None else part_old.chain, None if part_ref is None else part_ref.chain,
                temperature=config.temperature, **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
        if config.image_loss:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
                logits = image_logits(model, part, image_hidden, guidance, uncond_tokens)
            loss, m = grpo_loss(
                logits, part.image_ids, torch.ones_like(part.image_ids, dtype=torch.bool), adv,
                None if part_old is None else part_old.image, None if part_ref is None else part_ref.image,
                temperature=config.temperature, **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
        seq_sum, seq_count = sum(sums), sum(counts).to(torch.float32)
        if kind == "sequence":
            loss = (seq_sum / seq_count.clamp_min(1)).sum() / scale
        else:
            loss = seq_sum.sum() / scale
        loss.backward()
        totals["loss"] += float(loss.detach())
        for m in metrics:
            n = float(m["num_tokens"])
            totals["num_tokens"] += n
            for name in METRIC_NAMES:
                totals[name] += float(m[name]) * n
    return totals
