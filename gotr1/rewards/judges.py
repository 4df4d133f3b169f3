"""Judges: the multimodal LLM behind the rewards, and the in-process Qwen2.5-VL backend.

A judge is any object with two methods (the :class:`Judge` protocol):

- ``chat(requests) -> list[str | None]``: one reply per request, in order; a request that fails
  returns None and never raises, so the reward scores it 0 and counts it.
- ``grounding_size(width, height) -> (w, h)``: the size a ``width`` x ``height`` image has once the
  judge's processor resized it; Qwen2.5-VL answers grounding questions in pixels of that frame.

A request is a list of chat messages ``{"role": ..., "content": [{"type": "text", "text": ...},
{"type": "image", "image": PIL.Image | uint8 array [H, W, 3]}]}`` (``content`` may be a plain string).

:class:`TransformersJudge` runs Qwen2.5-VL in this process through ``Qwen2_5_VLForConditionalGeneration``.
It avoids the torchvision-backed fast image processor (torchvision does not import beside CPU torch
wheels) by using the PIL/numpy ``Qwen2VLImageProcessorPil`` (``Qwen2VLImageProcessor`` before it was
renamed) and writes Qwen's chat format itself, so no processor class with torchvision imports is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from gotr1.images import as_rgb_array, image_size
from gotr1.rewards.coords import smart_resize

log = logging.getLogger(__name__)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, "<|video_pad|>")


@runtime_checkable
class Judge(Protocol):
    """What the rewards need from a judge backend (see the module docstring)."""

    def chat(self, requests: Sequence[list[dict]]) -> list[str | None]: ...

    def grounding_size(self, width: int, height: int) -> tuple[int, int]: ...


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def message_parts(message: dict) -> list[dict]:
    """The content parts of one message, a plain-string content read as one text part."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TypeError(f"message content must be a str or a list of parts, got {type(content).__name__}")
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
            raise ValueError(f"message part must be {{'type': 'text'|'image', ...}}, got {part!r:.80}")
    return content


def request_images(request: list[dict]) -> list:
    """The images of a request, in order of appearance."""
    return [p["image"] for m in request for p in message_parts(m) if p["type"] == "image"]


def render_chat(request: list[dict], image_tokens: Iterator[int]) -> str:
    """Qwen2.5-VL's chat format for one request, ending where the assistant's reply starts.

    Each image becomes ``<|vision_start|>`` + ``n`` x ``<|image_pad|>`` + ``<|vision_end|>``, ``n`` taken
    from ``image_tokens`` (the processor's patch grid divided by merge_size**2).
    """
    pieces = []
    for message in request:
        pieces.append(f"{IM_START}{message['role']}\n")
        for part in message_parts(message):
            if part["type"] == "text":
                pieces.append(part["text"])
            else:
                pieces.append(VISION_START + IMAGE_PAD * next(image_tokens) + VISION_END)
        pieces.append(f"{IM_END}\n")
    pieces.append(f"{IM_START}assistant\n")
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------
# In-process Qwen2.5-VL
# ---------------------------------------------------------------------------------------------


def qwen_image_processor_class():
    """Qwen2-VL's PIL/numpy image processor class (no torchvision), under its current or former name."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        return Qwen2VLImageProcessor


def _pixel_bounds(processor) -> tuple[int, int]:
    size = getattr(processor, "size", None)
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    low = get("shortest_edge") or getattr(processor, "min_pixels", None)
    high = get("longest_edge") or getattr(processor, "max_pixels", None)
    if not low or not high:
        raise ValueError(f"cannot read min/max pixels from image processor {type(processor).__name__}: size={size}")
    return int(low), int(high)


def _pixel_size(min_pixels: int, max_pixels: int) -> dict:
    # A fresh ``size`` dict: some releases write min_pixels/max_pixels into the class-level default.
    return {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}


class TransformersJudge:
    """Qwen2.5-VL in this process: batched, left-padded, greedy generation with bounded length.

    Parameters
    ----------
    model : Qwen2_5_VLForConditionalGeneration
        In eval mode, on its device (bf16 on CUDA is what :meth:`from_pretrained` picks).
    tokenizer : PreTrainedTokenizerBase
        Qwen's tokenizer (with ``<|im_start|>``, ``<|vision_start|>``, ``<|image_pad|>`` ...); its padding
        side is set to left so every row's reply starts at the same column.
    image_processor : Qwen2VLImageProcessorPil
        The PIL/numpy processor; its min/max pixels decide the resized frame of grounding answers.
    max_new_tokens : int
        Reply length bound (a score needs ~10 tokens, a grounding answer ~40).
    batch_size : int
        Requests per ``generate`` call. Requests are sorted by length first, so batches pad little.
    """

    def __init__(self, model, tokenizer, image_processor, max_new_tokens: int = 128, batch_size: int = 16):
        if max_new_tokens <= 0 or batch_size <= 0:
            raise ValueError(f"max_new_tokens and batch_size must be positive, got {max_new_tokens}, {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.min_pixels, self.max_pixels = _pixel_bounds(image_processor)
        self.merge_size = int(image_processor.merge_size)
        self.factor = int(image_processor.patch_size) * self.merge_size

    @classmethod
    def from_pretrained(cls, path: str, device=None, dtype=None, min_pixels: int | None = None,
                        max_pixels: int | None = None, **kwargs) -> "TransformersJudge":
        """Load a Qwen2.5-VL checkpoint from a local directory (e.g. Qwen2.5-VL-7B-Instruct).

        ``device`` defaults to CUDA when available; ``dtype`` to bf16 on CUDA and float32 elsewhere;
        ``min_pixels``/``max_pixels`` override the checkpoint's processor bounds; other keyword arguments
        go to the constructor.
        """
        import torch
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
        processor = qwen_image_processor_class().from_pretrained(path)
        if min_pixels is not None or max_pixels is not None:
            low, high = _pixel_bounds(processor)
            processor = qwen_image_processor_class().from_pretrained(path, size=_pixel_size(min_pixels or low,
                                                                                            max_pixels or high))
        return cls(model, AutoTokenizer.from_pretrained(path), processor, **kwargs)

    def grounding_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` of the frame this judge's processor resizes a ``width`` x ``height`` image to."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return w, h

    def chat(self, requests: Sequence[list[dict]]) -> list[str | None]:
        """One greedy reply per request, in order; None for a request that fails even on its own."""
        replies: list[str | None] = [None] * len(requests)
        cost = [self._cost(r) for r in requests]
        order = sorted(range(len(requests)), key=cost.__getitem__)
        for start in range(0, len(order), self.batch_size):
            self._answer(requests, order[start : start + self.batch_size], replies)
        return replies

    def _answer(self, requests, chunk: list[int], replies: list) -> None:
        """Fill ``replies`` for the requests ``chunk``; a failed batch is retried one request at a time, so
        one bad request (or a batch too large for memory) does not take the others down with it."""
        try:
            texts = self._generate([requests[i] for i in chunk])
        except Exception as err:  # a judge failure must score 0, not end the training run
            log.warning("TransformersJudge: a batch of %d requests failed: %r", len(chunk), err)
            if len(chunk) > 1:
                for i in chunk:
                    self._answer(requests, [i], replies)
            return
        for i, text in zip(chunk, texts):
            replies[i] = text

    def _cost(self, request: list[dict]) -> int:
        """Rough prompt length in tokens, to batch requests of similar length (malformed ones count 0 here
        and fail in their batch)."""
        try:
            text = sum(len(p["text"]) for m in request for p in message_parts(m) if p["type"] == "text")
            pixels = sum(w * h for w, h in (self.grounding_size(*image_size(i)) for i in request_images(request)))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return 0
        return text // 4 + pixels // (self.factor * self.factor)

    def _generate(self, requests: list[list[dict]]) -> list[str]:
        import torch
        from transformers import GenerationConfig

        images = [as_rgb_array(image) for r in requests for image in request_images(r)]
        vision = {}
        counts: list[int] = []
        if images:
            vision = dict(self.image_processor(images=images, return_tensors="pt"))
            counts = (vision["image_grid_thw"].prod(-1) // self.merge_size**2).tolist()
        tokens = iter(counts)
        texts = [render_chat(r, tokens) for r in requests]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = self.model.device
        inputs = {k: v.to(device) for k, v in {**encoded, **vision}.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        generation = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.convert_tokens_to_ids(IM_END),
        )
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=generation)
        return self.tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------
# A random-weight judge for tests and benchmarks
# ---------------------------------------------------------------------------------------------


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from gotr1.rewards.templates import TEMPLATES

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t.text for t in TEMPLATES.values()] + [t.reply_format for t in TEMPLATES.values()]
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=IM_END, pad_token="<|endoftext|>")


def tiny_judge(seed: int = 0, max_new_tokens: int = 16, batch_size: int = 64, max_pixels: int = 64 * 64):
    """A random-weight Qwen2.5-VL :class:`TransformersJudge` for tests and CPU benchmarks (builds in well under 1 s).

    Two text layers of width 64, a two-block vision tower, a 512-token BPE tokenizer trained in-process
    with Qwen's special tokens, and an image processor capped at ``max_pixels`` (a 384 x 384 image becomes
    56 x 56: 4 vision tokens). Its replies are noise, so the rewards mostly take their failure path;
    weights depend only on ``seed`` and the global RNG is left untouched.
    """
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            # mrope splits head_dim / 2 = 8 rotary frequencies over (time, height, width)
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids[IM_END], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1]),
        image_token_id=ids[IMAGE_PAD], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    processor = qwen_image_processor_class()(size=_pixel_size(28 * 28, max_pixels))
    return TransformersJudge(model, tokenizer, processor, max_new_tokens=max_new_tokens, batch_size=batch_size)
