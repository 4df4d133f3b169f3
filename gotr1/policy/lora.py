"""LoRA adapters for Janus-Pro policies (GoT-R1 trains rank 32, alpha 32), shared by SFT and GRPO.

Adapters go on the language model's attention and MLP projections only; the vision encoder, the VQ
model and the image heads stay frozen, as in the paper. The GoT tags are new tokens whose embedding and
text-head rows start as one shared mean row: frozen, the policy could never tell ``<|obj_start|>`` from
``<|box_start|>``. Those rows (and only those) are therefore trained too, through PEFT's trainable
tokens, so a LoRA checkpoint stays small. PEFT rebuilds such a layer's weight at every call; the rollout reads
the rows merged once per phase instead (:func:`merged_tag_rows`), and the GRPO loss takes them apart from the
frozen head (:func:`trainable_rows`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from gotr1.policy.model import got_token_ids

LANGUAGE_MODEL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model, processor, rank: int = 32, alpha: float = 32, dropout: float = 0.0,
               target_modules: tuple[str, ...] = LANGUAGE_MODEL_PROJECTIONS):
    """Wrap ``model`` in a PEFT LoRA model over the language model's projections.

    Parameters
    ----------
    model : JanusForConditionalGeneration
    processor : JanusProcessor
        Its tokenizer's GoT tag ids become trainable rows of the input embedding and the text head.
    rank, alpha, dropout :
        LoRA rank ``r``, scaling ``alpha`` (the update is ``alpha / r * B @ A``) and dropout.
    target_modules : tuple of str
        Projection names inside ``model.language_model`` to adapt.

    Returns
    -------
    PeftModel
        ``disable_adapter()`` gives back the base policy (GRPO's reference model, with no second copy).
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    if not target_modules:
        raise ValueError("lora_target_modules must name at least one projection")
    tokens = got_token_ids(processor)
    tag_ids = [tokens.obj_start, tokens.obj_end, tokens.box_start, tokens.box_end]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf".*language_model.*\.({'|'.join(target_modules)})",
        trainable_token_indices={"embed_tokens": tag_ids, "lm_head": tag_ids},
    )
    return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------
# The trained tag rows, read without PEFT's per-call rebuild
# ---------------------------------------------------------------------------------------------
#
# PEFT's trainable-tokens layer rebuilds its whole weight on every call (``base.index_copy(rows)``: a host-to-
# device copy of the row ids and a copy of the [V, H] table). That suits a training forward, whose gradient
# must reach the rows, but not a decode loop calling the embedding and the text head once per token.


def _live_trainable_tokens(module) -> bool:
    """Whether ``module`` is a PEFT trainable-tokens layer with active, enabled, unmerged adapters."""
    return (hasattr(module, "trainable_tokens_delta") and hasattr(module, "token_indices")
            and bool(module.active_adapters) and not module.disable_adapters and not module.merged)


def trainable_rows(module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(weight, row_ids, rows)`` of a module that PEFT gave trainable tokens (e.g. a LoRA policy's ``lm_head``):
    the frozen base weight ``[V, H]``, int64 ids ``[K]`` on its device and the trained ``[K, H]`` rows (parameters,
    with their gradient) of every active adapter. The module computes with ``weight[row_ids]`` replaced by
    ``rows``. None for a plain module or one whose adapters are disabled."""
    layer = next((m for m in module.modules() if _live_trainable_tokens(m)), None)
    if layer is None:
        return None
    weight = layer.get_base_layer().weight
    names = list(layer.active_adapters)
    row_ids = torch.as_tensor([i for n in names for i in layer.token_indices[n]], dtype=torch.long,
                              device=weight.device)
    rows = torch.cat([layer.trainable_tokens_delta[n] for n in names]) if len(names) > 1 else \
        layer.trainable_tokens_delta[names[0]]
    return weight, row_ids, rows


@contextmanager
def merged_tag_rows(model):
    """Inside the block the trained tag rows sit in the base weights, which PEFT's layers then read as they are.

    Every PEFT trainable-tokens layer of ``model`` (with LoRA: the GoT tag rows of the embedding and the text head)
    gets its trained rows written into its base weight in place, once, and is marked merged, so each call is a
    plain embedding lookup or matmul; on exit the base rows are written back and the mark removed. The weights
    must not change inside the block, and no gradient reaches the rows there: for the rollout's decode loops (no
    grad, every parameter whole: under FSDP2 inside :func:`gotr1.policy.sharding.gathered`). A model without
    such layers, or with its adapters disabled, is left as it is.
    """
    layers = [m for m in model.modules() if _live_trainable_tokens(m)]
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                weight, row_ids, rows = trainable_rows(layer)
                saved.append((layer, weight, row_ids, weight.index_select(0, row_ids)))
                weight.index_copy_(0, row_ids, rows.to(weight.dtype))
                layer.merged_adapters = list(layer.active_adapters)
        yield model
    finally:
        with torch.no_grad():
            for layer, weight, row_ids, base_rows in reversed(saved):  # tied layers: the first save is the base
                weight.index_copy_(0, row_ids, base_rows)
                layer.merged_adapters = []
