"""The GRPO update over a rollout: chain and image tokens of a sequence normalised together, micro-batched.

Chain tokens are scored through the text head (fused into the loss with
:func:`~gotr1.kernels.grpo_loss.fused_linear_grpo_loss`, so ``[B, T, 102400]`` logits never exist), image
tokens through the generation head (:func:`~gotr1.kernels.grpo_loss.grpo_loss`). Both return per-sequence
loss sums and token counts; this module adds them per sequence and applies the ``loss_type`` normalisation
over the whole (possibly multi-rank) batch, so micro-batching and sharding change nothing but rounding.
With ``importance_level="sequence"`` the ratio is computed separately over a sequence's chain tokens and its
image tokens (one call each): the two heads are scored apart.

Which tokens the loss covers, and how much each weighs, is a :class:`TokenSelection` built by
:func:`token_selection` from the rollout (truncated chains masked, rows out of the loss, truncated
importance-sampling weights, high-entropy tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from gotr1.kernels.grpo_loss import METRIC_NAMES, fused_linear_grpo_loss, grpo_loss, selective_logprobs
from gotr1.policy.forward import teacher_forced_hidden
from gotr1.policy.lora import trainable_rows
from gotr1.policy.model import GoTTokens, janus_parts
from gotr1.policy.precision import autocast, autocast_dtype
from gotr1.policy.tokens import LogProbs, TokenBatch, unconditional


@dataclass(frozen=True)
class LossNormalizer:
    """How summed token losses become the loss, over the whole (possibly multi-rank) batch.

    ``per_sequence``: divide each sequence's sum by its token count, then everything by ``scale`` (``grpo``);
    otherwise divide the sum by ``scale`` (``bnpo``: all tokens; ``dr_grpo``: ``B * max_len``).
    """

    per_sequence: bool
    scale: float


@dataclass(frozen=True)
class TokenSelection:
    """Which tokens of a batch the loss covers and how much each weighs.

    ``chain`` bool ``[B, T]`` and ``image`` bool ``[B, N]``: the tokens in the loss; ``chain_weights`` /
    ``image_weights`` float32 of the same shapes, multiplying each token's loss and gradient (None: 1).
    """

    chain: torch.Tensor
    image: torch.Tensor
    chain_weights: torch.Tensor | None = None
    image_weights: torch.Tensor | None = None

    def rows(self, index: slice) -> TokenSelection:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return TokenSelection(self.chain[index], self.image[index], pick(self.chain_weights), pick(self.image_weights))

    def num_tokens(self, config) -> int:
        """Tokens the loss covers under ``config.chain_loss`` / ``config.image_loss``."""
        return int(self.chain.sum()) * config.chain_loss + int(self.image.sum()) * config.image_loss


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
def policy_logprobs(model, batch: TokenBatch, config, tokens: GoTTokens, *,
                    with_entropy: bool = False) -> LogProbs | tuple[LogProbs, LogProbs]:
    """Log-probs of the batch's tokens under ``model`` (old or reference policy), micro-batched, no grad, in the
    precision of the rollout and the loss (``config.mixed_precision``).

    With ``with_entropy``, also each position's entropy of ``softmax(logits / temperature)``, float32 in the
    same ``[B, T]`` / ``[B, N]`` layout: ``(logprobs, entropies)``.
    """
    janus = janus_parts(model)
    guidance = config.guidance if config.cfg_in_loss else None
    chains, images = [], []  # (log-probs, entropies or None) per micro-batch
    with autocast(batch.prompt_ids.device.type, config.mixed_precision):
        for start in range(0, len(batch), config.micro_batch_size):
            part = batch.rows(slice(start, start + config.micro_batch_size))
            chain_hidden, image_hidden = teacher_forced_hidden(model, part)
            chains.append(_selected(janus.lm_head(chain_hidden), part.chain_ids, config.temperature, with_entropy))
            logits = image_logits(model, part, image_hidden, guidance, tokens)
            images.append(_selected(logits, part.image_ids, config.temperature, with_entropy))
    logprobs = LogProbs(torch.cat([c[0] for c in chains]), torch.cat([i[0] for i in images]))
    if not with_entropy:
        return logprobs
    return logprobs, LogProbs(torch.cat([c[1] for c in chains]), torch.cat([i[1] for i in images]))


def _selected(logits, token_ids, temperature: float, with_entropy: bool):
    if with_entropy:
        return selective_logprobs(logits, token_ids, temperature, with_entropy=True)
    return selective_logprobs(logits, token_ids, temperature), None


def loss_normalizer(batch: TokenBatch, config, world_batch: int, world_tokens: int) -> LossNormalizer:
    """The :class:`LossNormalizer` of ``config.loss_type`` for a batch of ``world_batch`` sequences holding
    ``world_tokens`` scored tokens over every rank (both counted over what the loss covers)."""
    if config.loss_type == "grpo":
        return LossNormalizer(per_sequence=True, scale=float(max(world_batch, 1)))
    if config.loss_type in ("bnpo", "dapo", "cispo"):  # TRL normalises cispo as dapo
        return LossNormalizer(per_sequence=False, scale=float(max(world_tokens, 1)))
    max_len = (batch.chain_ids.shape[1] if config.chain_loss else 0) + (batch.image_ids.shape[1] if config.image_loss else 0)
    return LossNormalizer(per_sequence=False, scale=float(max(world_batch * max_len, 1)))


# ---------------------------------------------------------------------------------------------
# Which tokens the loss covers
# ---------------------------------------------------------------------------------------------

def truncated_chains(batch: TokenBatch) -> torch.Tensor:
    """bool ``[B]``: rows whose chain hit the length cap, i.e. whose last chain token (``<begin_of_image>``)
    was appended, not sampled (outside ``chain_mask``). Reads chain tokens only: image tokens have no say."""
    last = (batch.chain_lengths - 1).clamp_min(0)[:, None]
    return ~batch.chain_mask.gather(1, last).squeeze(1)


def tis_weights(train: LogProbs, rollout: LogProbs, selection: TokenSelection, cap: float,
                level: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance-sampling weights ``min(exp(logp_train - logp_rollout), cap)``, float32
    ``([B, T], [B, N])``: per token, or (``level="sequence"``) one per row from the log-ratio summed over
    the row's chain and image tokens in ``selection``. Computed as ``exp(min(x, log cap))``: never inf."""
    chain_gap = torch.where(selection.chain, train.chain - rollout.chain, 0.0)
    image_gap = torch.where(selection.image, train.image - rollout.image, 0.0)
    if level == "sequence":
        per_row = chain_gap.sum(1) + image_gap.sum(1)
        chain_gap = per_row[:, None].expand_as(chain_gap)
        image_gap = per_row[:, None].expand_as(image_gap)
    log_cap = float(torch.tensor(cap, dtype=torch.float64).log())
    return chain_gap.clamp(max=log_cap).exp(), image_gap.clamp(max=log_cap).exp()


def top_entropy_tokens(entropy: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """bool, shaped like ``mask``: the tokens of ``mask`` whose entropy is at or above the ``quantile`` of the
    entropies under ``mask`` (all of them when ``mask`` is empty)."""
    values = entropy[mask].to(torch.float64)
    if values.numel() == 0:
        return mask
    threshold = torch.quantile(values, quantile).to(entropy.dtype)
    return mask & (entropy >= threshold)


def token_selection(batch: TokenBatch, config, *, rows_in_loss: torch.Tensor | None = None,
                    train: LogProbs | None = None, rollout: LogProbs | None = None,
                    entropy: LogProbs | None = None) -> TokenSelection:
    """The tokens the loss covers and their weights, from the config's options.

    ``rows_in_loss`` bool ``[B]`` (None: all): rows out of it contribute nothing. With
    ``mask_truncated_chains`` the chain tokens of :func:`truncated_chains` rows are left out (image tokens
    never are). With ``tis_cap``, :func:`tis_weights` of ``train`` (teacher-forced) against ``rollout``; with
    ``top_entropy_quantile < 1``, weight 0 below each head's quantile of ``entropy`` (chain and image
    vocabularies differ, so each head is ranked on its own); the two weights multiply.
    """
    rows = torch.ones(len(batch), dtype=torch.bool, device=batch.chain_ids.device) if rows_in_loss is None else rows_in_loss
    chain = batch.chain_mask & rows[:, None]
    if config.mask_truncated_chains:
        chain = chain & ~truncated_chains(batch)[:, None]
    image = rows[:, None].expand_as(batch.image_ids).clone()
    selection = TokenSelection(chain, image)
    weights = None
    if config.tis_cap is not None:
        weights = tis_weights(train, rollout, selection, config.tis_cap, config.tis_level)
    if config.top_entropy_quantile < 1:
        q = config.top_entropy_quantile
        kept = (top_entropy_tokens(entropy.chain, chain, q).float(), top_entropy_tokens(entropy.image, image, q).float())
        weights = kept if weights is None else (weights[0] * kept[0], weights[1] * kept[1])
    if weights is None:
        return selection
    return TokenSelection(chain, image, weights[0].contiguous(), weights[1].contiguous())


def logprob_gap(train: LogProbs, rollout: LogProbs, selection: TokenSelection, config) -> tuple[float, float, float]:
    """``(sum, count, max)`` of ``|logp_train - logp_rollout|`` over the tokens the loss covers."""
    gaps = []
    if config.chain_loss:
        gaps.append((train.chain - rollout.chain).abs()[selection.chain])
    if config.image_loss:
        gaps.append((train.image - rollout.image).abs()[selection.image])
    gap = torch.cat(gaps).double()
    return float(gap.sum()), float(gap.numel()), float(gap.max()) if gap.numel() else 0.0


def loss_and_backward(model, batch: TokenBatch, advantages: torch.Tensor, *, old: LogProbs | None,
                      ref: LogProbs | None, config, normalizer: LossNormalizer, tokens: GoTTokens,
                      selection: TokenSelection | None = None) -> dict:
    """Forward + backward of the GRPO loss over ``batch`` in micro-batches; gradients accumulate.

    Chain tokens are scored where ``selection.chain`` is True (default ``batch.chain_mask``: in a rollout,
    the tokens the policy sampled; a ``<begin_of_image>`` appended at the length cap was not sampled and is
    not scored), image tokens where ``selection.image`` is (default: all), each weighted by the selection's
    weights. ``old`` / ``ref`` are the old and reference policies' log-probs (None: the current policy's,
    detached / no KL term). Every forward runs in ``config.mixed_precision``, as the rollout and
    :func:`policy_logprobs` do. Returns the summed loss contribution and token-weighted metric sums (divide by
    ``num_tokens``; ``entropy_chain`` by ``chain_tokens``, ``entropy_image`` by ``image_tokens``), read from the
    device once, after the last micro-batch.
    """
    janus = janus_parts(model)
    guidance = config.guidance if config.cfg_in_loss else None
    if selection is None:
        selection = TokenSelection(batch.chain_mask, torch.ones_like(batch.image_ids, dtype=torch.bool))
    # Every other loss type has GRPO's per-token objective; its normalisation is applied here, globally.
    common = dict(eps_low=config.eps_low, eps_high=config.eps_high, delta=config.delta, beta=config.beta,
                  loss_type="cispo" if config.loss_type == "cispo" else "grpo", entropy_coef=config.entropy_coef,
                  importance_level=config.importance_level, reduction="none")
    if config.loss_type == "cispo":
        common["cispo_eps_high"] = config.cispo_eps_high
    device_type = batch.prompt_ids.device.type
    precision = partial(autocast, device_type, config.mixed_precision)
    # float64 sums on the device, read once at the end: a float() per metric would stall the queue ~20 times
    # per micro-batch.
    names = ("loss", "num_tokens", *METRIC_NAMES, "entropy_chain", "chain_tokens", "entropy_image", "image_tokens")
    totals = torch.zeros(len(names), dtype=torch.float64, device=batch.prompt_ids.device)
    at = {name: i for i, name in enumerate(names)}
    for start in range(0, len(batch), config.micro_batch_size):
        index = slice(start, start + config.micro_batch_size)
        part, adv, chosen = batch.rows(index), advantages[index], selection.rows(index)
        part_old, part_ref = (None if old is None else old.rows(index)), (None if ref is None else ref.rows(index))
        with precision():
            chain_hidden, image_hidden = teacher_forced_hidden(model, part)
        sums, counts, metrics = [], [], []
        if config.chain_loss:
            # A LoRA head: its trained GoT tag rows over the frozen weight (the fused loss trains only those rows).
            weight, row_ids, rows = trainable_rows(janus.lm_head) or (janus.lm_head.weight, None, None)
            dtype = autocast_dtype(device_type, config.mixed_precision, weight.dtype)  # the rollout's head's
            loss, m = fused_linear_grpo_loss(
                chain_hidden.to(dtype), weight.to(dtype), part.chain_ids, chosen.chain, adv,
                None if part_old is None else part_old.chain, None if part_ref is None else part_ref.chain,
                temperature=config.temperature, token_weights=chosen.chain_weights, rows=rows, row_ids=row_ids,
                **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
            totals[at["entropy_chain"]] += m["entropy_mean"].double() * m["num_tokens"].double()
            totals[at["chain_tokens"]] += m["num_tokens"].double()
        if config.image_loss:
            with precision():
                logits = image_logits(model, part, image_hidden, guidance, tokens)
            loss, m = grpo_loss(
                logits, part.image_ids, chosen.image, adv,
                None if part_old is None else part_old.image, None if part_ref is None else part_ref.image,
                temperature=config.temperature, token_weights=chosen.image_weights, **common)
            sums.append(loss), counts.append(m["token_counts"]), metrics.append(m)
            totals[at["entropy_image"]] += m["entropy_mean"].double() * m["num_tokens"].double()
            totals[at["image_tokens"]] += m["num_tokens"].double()
        seq_sum, seq_count = sum(sums), sum(counts).to(torch.float32)
        if normalizer.per_sequence:
            loss = (seq_sum / seq_count.clamp_min(1)).sum() / normalizer.scale
        else:
            loss = seq_sum.sum() / normalizer.scale
        loss.backward()
        totals[at["loss"]] += loss.detach().double()
        for m in metrics:
            n = m["num_tokens"].double()
            totals[at["num_tokens"]] += n
            for name in METRIC_NAMES:
                totals[at[name]] += m[name].double() * n
    return dict(zip(names, totals.tolist()))
