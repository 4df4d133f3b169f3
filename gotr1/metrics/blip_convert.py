"""The original BLIP VQA checkpoint (Salesforce's BLIP repository) as a transformers ``BlipForQuestionAnswering``.

T2I-CompBench's BLIP-VQA loads Salesforce's ``model_base_vqa_capfilt_large.pth`` and runs it at 480 px: a
ViT-B/16 whose position table holds 30 x 30 patches. The hub's ``Salesforce/blip-vqa-capfilt-large`` was
converted at 384 px (the table resampled to 24 x 24), so a 480-px run resamples it back: two interpolations
the official model never saw. :func:`convert_blip` keeps every tensor as the checkpoint has it, the position
table at its own resolution included, and writes a folder that ``gotr1 eval --blip-model`` loads::

    gotr1 eval convert-blip model_base_vqa_capfilt_large.pth blip_vqa_480

Names map one to one (the original's ``visual_encoder`` is a timm-style ViT, its ``text_encoder`` and
``text_decoder`` use BERT's names, as transformers' do); sizes are read from the tensors' shapes, attention
heads are 64 wide (ViT-B and BERT-base), and the vision layer norms keep the original ``eps=1e-6``. The
tokenizer and image processor come from a transformers BLIP processor (``processor``, the hub's by default:
BERT's uncased vocabulary with ``[DEC]``, the same as the original's), its image size set to the checkpoint's.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gotr1.metrics.compbench import BlipVQAScore
from gotr1.metrics.metric import load_model

HEAD_WIDTH = 64
"""Width of one attention head in BLIP's ViT-B and BERT-base: heads = hidden size / 64."""
VISION_LAYER_NORM_EPS = 1e-6
"""The original ViT's ``partial(nn.LayerNorm, eps=1e-6)`` (transformers' BLIP default is 1e-5)."""

_RENAMES = (
    (r"visual_encoder\.cls_token", "vision_model.embeddings.class_embedding"),
    (r"visual_encoder\.pos_embed", "vision_model.embeddings.position_embedding"),
    (r"visual_encoder\.patch_embed\.proj\.(weight|bias)", r"vision_model.embeddings.patch_embedding.\1"),
    (r"visual_encoder\.blocks\.(\d+)\.norm([12])\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"vision_model.encoder.layers.\1.self_attn.qkv.\2"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)",
     r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
    (r"visual_encoder\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"visual_encoder\.norm\.(weight|bias)", r"vision_model.post_layernorm.\1"),
    (r"(text_encoder|text_decoder)\.(.+)", r"\1.\2"),  # BERT's names on both sides
)
_BUFFERS = re.compile(r".*\.position_ids")  # saved by old torch versions; transformers rebuilds them


def read_original(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an original BLIP checkpoint (a ``.pth`` holding it, or a dict with it under ``model``).

    Loaded with ``weights_only=True``: a file holding anything but tensors, numbers and containers is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original checkpoint: no file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of other objects, a truncated or foreign file
        raise ValueError(f"original checkpoint: {path} is not a plain torch state dict ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"original checkpoint: {path} holds no state dict of tensors")
    return state


def to_transformers_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original BLIP VQA names -> ``BlipForQuestionAnswering``'s; a key of neither kind is an error."""
    out, unknown = {}, []
    for key, tensor in state.items():
        if _BUFFERS.fullmatch(key):
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"original checkpoint: {len(unknown)} keys are not BLIP VQA's, e.g. {unknown[:5]} "
                         "(expected visual_encoder.*, text_encoder.*, text_decoder.*)")
    return out


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for key in state if (m := re.match(pattern, key))})


def blip_config(state: dict[str, torch.Tensor], tokenizer):
    """A ``BlipConfig`` whose sizes are those of ``state`` (transformers' names); token ids from ``tokenizer``."""
    from transformers import BlipConfig

    try:
        positions, vision_width = state["vision_model.embeddings.position_embedding"].shape[-2:]
        patch = state["vision_model.embeddings.patch_embedding.weight"].shape[-1]
        vocab, text_width = state["text_encoder.embeddings.word_embeddings.weight"].shape
        max_positions = state["text_encoder.embeddings.position_embeddings.weight"].shape[0]
        text_ffn = state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0]
        cross_width = state["text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape[1]
        vision_ffn = state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"original checkpoint: no {err.args[0]} (after renaming); not a BLIP VQA model") from None
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ValueError(f"original checkpoint: a position table of {positions} rows is not 1 + a square of patches")
    dec = tokenizer.convert_tokens_to_ids("[DEC]")
    if dec in (None, tokenizer.unk_token_id):
        raise ValueError("processor: its tokenizer has no [DEC] token; give a BLIP processor")
    vision = dict(image_size=side * patch, patch_size=patch, hidden_size=vision_width, intermediate_size=vision_ffn,
                  num_hidden_layers=_count(state, r"vision_model\.encoder\.layers\.(\d+)\."),
                  num_attention_heads=vision_width // HEAD_WIDTH, layer_norm_eps=VISION_LAYER_NORM_EPS)
    text = dict(vocab_size=vocab, hidden_size=text_width, intermediate_size=text_ffn,
                num_hidden_layers=_count(state, r"text_encoder\.encoder\.layer\.(\d+)\."),
                num_attention_heads=text_width // HEAD_WIDTH, max_position_embeddings=max_positions,
                encoder_hidden_size=cross_width, bos_token_id=dec, pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id)
    return BlipConfig(text_config=text, vision_config=vision)


def convert_blip(original: str | Path, out_dir: str | Path, processor: str | Path = BlipVQAScore.DEFAULT_ID) -> Path:
    """Write the original BLIP VQA checkpoint ``original`` to ``out_dir`` as a transformers model and processor.

    Parameters
    ----------
    original : str or Path
        The original ``.pth`` (e.g. ``model_base_vqa_capfilt_large.pth``).
    out_dir : str or Path
        Folder to write (``config.json``, weights, processor files); created if missing.
    processor : str or Path
        A transformers BLIP processor (hub id or folder) for the tokenizer and image processing.

    Returns
    -------
    Path
        ``out_dir``, loadable by ``BlipVQAScore.from_pretrained`` and ``gotr1 eval --blip-model``.
    """
    from transformers import BlipForQuestionAnswering, BlipProcessor

    state = to_transformers_names(read_original(original))
    blip_processor = load_model("convert-blip", str(processor), lambda: BlipProcessor.from_pretrained(processor))
    config = blip_config(state, blip_processor.tokenizer)
    model = BlipForQuestionAnswering(config).eval()
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    missing = sorted(set(expected) - set(state))
    unused = sorted(set(state) - set(expected))
    if wrong or missing or unused:
        raise ValueError(f"original checkpoint: does not fit a BLIP VQA model of its own sizes (shapes differ: "
                         f"{wrong[:3]}, missing: {missing[:3]}, unused: {unused[:3]})")
    tied = getattr(model, "_tied_weights_keys", None) or {}
    for target, source in tied.items():
        if not torch.equal(state[target], state[source]):
            raise ValueError(f"original checkpoint: {target} differs from {source}, which the model ties to it")
    model.load_state_dict(state)
    blip_processor.image_processor.size = {"height": config.vision_config.image_size,
                                           "width": config.vision_config.image_size}
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    blip_processor.save_pretrained(out_dir)
    return out_dir
