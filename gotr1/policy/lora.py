"""LoRA adapters for Janus-Pro policies (GoT-R1 trains rank 32, alpha 32), shared by SFT and GRPO.

Adapters go on the language model's attention and MLP projections only; the vision encoder, the VQ
model and the image heads stay frozen, as in the paper. The GoT tags are new tokens whose embedding and
text-head rows start as one shared mean row: frozen, the policy could never tell ``<|obj_start|>`` from
``<|box_start|>``. Those rows (and only those) are therefore trained too, through PEFT's trainable
tokens, so a LoRA checkpoint stays small.
"""

from __future__ import annotations

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
