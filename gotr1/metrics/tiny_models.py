"""Random-weight evaluator models built in process, for tests and CPU benchmarks.

Each builder returns ``(model, processor)`` ready for a metric class of :mod:`gotr1.metrics.compbench` (or
GenEval's): the architecture of the real evaluator at a tiny width, its processor, and a tokenizer trained
here on the shipped T2I-CompBench prompts, so no weights or vocabularies are downloaded. Scores from these
models are noise; the builders exist so every metric runs end to end on a CPU in seconds. Weights depend
only on ``seed``; the global RNG is left untouched. :func:`centre_similarities` shifts a tiny CLIP so that
the preference rewards built on it answer inside their ranges, different for every image and prompt.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib.resources import files

import torch
import torch.nn.functional as F

_BENCH = "assets/t2i_compbench"
# Words the evaluators ask about beyond the prompts: the VQA answers, GenEval's colours and counts.
_EXTRA_WORDS = "yes no zero one two three four five six seven eight nine ten photo of".split()


def _corpus() -> list[str]:
    """The shipped prompt lists, extra words, and every letter alone (so any word has a spelling)."""
    folder = files("gotr1").joinpath(_BENCH)
    lines = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            lines += entry.read_text(encoding="utf-8").splitlines()
    letters = " ".join("abcdefghijklmnopqrstuvwxyz0123456789?.,'-")
    return lines + [" ".join(_EXTRA_WORDS)] * 64 + [letters] * 8


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


# ---------------------------------------------------------------------------------------------- CLIP


def _words(pattern: str) -> list[str]:
    """The corpus's distinct lower-cased words under ``pattern``, sorted (a tokenizer trainer breaks ties in
    its counts by hash order, which differs between processes: building the vocabulary from the sorted
    words instead makes a tiny model identical in every process, e.g. beside a reward server)."""
    return sorted({w for line in _corpus() for w in re.findall(pattern, line.lower())})


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict, tuple]:
    """Vocabulary and merges of a byte-level BPE with CLIP's ``</w>`` word ends: every character, and every
    corpus word spelled by merging its letters left to right."""
    words = _words(r"[a-z]+|[0-9]|[^\sa-z0-9]+")
    chars = sorted({c for w in words for c in w})
    tokens, merges = [*chars, *(c + "</w>" for c in chars)], []
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        for symbol in symbols[1:]:
            merges.append((symbols[0], symbol))
            symbols[0] += symbol
            tokens.append(symbols[0])
    tokens, merges = list(dict.fromkeys(tokens)), list(dict.fromkeys(merges))
    # CLIP and OWL pool the text at the highest id (their end token, last in CLIP's vocabulary): the two
    # special tokens go last so argmax pooling finds the end token here as well.
    vocab = {token: i for i, token in enumerate(tokens + ["<|startoftext|>", "<|endoftext|>"])}
    return vocab, tuple(merges)


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges))


def _layers(width: int, layers: int) -> dict:
    """One transformer tower's size: ``layers`` layers of ``width`` (heads of 64, at least 2; MLP 4x)."""
    return dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                num_attention_heads=max(2, width // 64))


def _towers(tokenizer, image_size: int, max_positions: int, width: int, layers: int, patch: int) -> tuple[dict, dict]:
    """Text and vision tower configs of the tiny CLIP and OWLv2."""
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **_layers(width, layers))
    vision = dict(image_size=image_size, patch_size=patch, **_layers(width, layers))
    return text, vision


def tiny_clip(seed: int = 0, image_size: int = 32, width: int = 32, layers: int = 2, patch: int = 8):
    """A random-weight ``CLIPModel`` (by default 2 layers of width 32 per tower, patch 8; benchmarks ask for
    real widths) and its ``CLIPProcessor``.

    The tokenizer is a ``CLIPTokenizer`` over a BPE trained here with CLIP's splitting and ``</w>``
    word ends; the image processor resizes and centre-crops to ``image_size``. Builds in about 1 s.
    """
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    text, vision = _towers(tokenizer, image_size, 77, width, layers, patch)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = _seeded(seed, lambda: CLIPModel(config))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def centre_similarities(model, processor, cosine: float = 0.22, spread: float = 0.025, seed: int = 0):
    """Shift a random-weight ``CLIPModel`` (in place) so image-text cosines centre on ``cosine`` with standard
    deviation about ``spread``; returns ``model``.

    Random weights put the cosines around 0, and the preference rewards map everything below their ranges'
    floors (PickScore raw 16, CLIPScore cosine 0, HPS cosine 0.1) to 0: every image would score exactly 0, and a
    test could not tell one answer from another. Here the features of 16 seeded images and 16 corpus prompts
    are measured once; each tower's final layer-norm bias then removes that tower's mean feature and adds a
    shared direction (at angle ``arccos(cosine)`` between the towers) whose length is solved by bisection
    for ``spread``. What depends on the image and the prompt is kept, only centred and scaled against it.
    ``logit_scale`` becomes ``21 / cosine``, so PickScore's raw score centres on 21, the middle of its range.
    """
    generator = torch.Generator().manual_seed(seed)
    size = model.config.vision_config.image_size
    images = list((torch.rand(16, size, size, 3, generator=generator) * 255).to(torch.uint8).numpy())
    corpus = _corpus()
    prompts = corpus[:: max(1, len(corpus) // 16)][:16]
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        text = processor.tokenizer(prompts, padding=True, return_tensors="pt")
        image_features = model.get_image_features(pixel_values=pixels).pooler_output.double()
        text_features = model.get_text_features(**text).pooler_output.double()
        image_mean, text_mean = image_features.mean(0), text_features.mean(0)
        image_features, text_features = image_features - image_mean, text_features - text_mean
        image_power, text_power = image_features.pow(2).sum(1).mean(), text_features.pow(2).sum(1).mean()
        u, w = torch.linalg.qr(torch.randn(image_features.shape[1], 2, generator=generator, dtype=torch.float64))[0].T

        def shifts(length: float):
            # The angle between the shifts, widened for the features' own power so the mean stays ``cosine``.
            angle = min(1.0, cosine * float(((length**2 + image_power) * (length**2 + text_power)).sqrt()) / length**2)
            return length * u, length * (angle * u + (1 - angle**2) ** 0.5 * w)

        def std(length: float) -> float:
            to_image, to_text = shifts(length)
            return F.cosine_similarity(image_features[:, None] + to_image, text_features[None] + to_text, dim=-1).std()

        low, high = 1e-3, 1.0
        while std(high) > spread:
            high *= 2
        for _ in range(50):
            low, high = ((low + high) / 2, high) if std((low + high) / 2) > spread else (low, (low + high) / 2)
        to_image, to_text = shifts(high)
        vision_bias = torch.linalg.pinv(model.visual_projection.weight.double()) @ (to_image - image_mean)
        text_bias = torch.linalg.pinv(model.text_projection.weight.double()) @ (to_text - text_mean)
        model.vision_model.post_layernorm.bias.add_(vision_bias.float())
        model.text_model.final_layer_norm.bias.add_(text_bias.float())
        model.logit_scale.fill_(math.log(21.0 / cosine))
    return model


# ---------------------------------------------------------------------------------------------- BLIP


@lru_cache(maxsize=1)
def _bert_vocab() -> dict:
    """A WordPiece vocabulary (lower-cased): BERT's specials plus BLIP's ``[DEC]`` and ``[ENC]``, every corpus
    word whole, and every character alone and as a ``##`` continuation (so any word has a spelling)."""
    words = _words(r"[a-z0-9]+|[^\sa-z0-9]")
    chars = sorted({c for w in words for c in w})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", *words, *chars, *("##" + c for c in chars)]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def tiny_blip_vqa(seed: int = 0, image_size: int = 32, width: int = 32, layers: int = 2, patch: int = 8):
    """A random-weight ``BlipForQuestionAnswering`` (by default 2 layers of width 32, patch 8) and its
    ``BlipProcessor``.

    The tokenizer is a ``BertTokenizer`` over a WordPiece vocabulary trained here, with ``yes`` and ``no``
    single tokens and BLIP's ``[DEC]`` (the decoder's start) and ``[ENC]`` (the question's first token).
    """
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

    vocab = _bert_vocab()
    tokenizer = BertTokenizer(vocab=dict(vocab), bos_token="[DEC]", extra_special_tokens=["[ENC]"])
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), encoder_hidden_size=width, max_position_embeddings=64,
            bos_token_id=vocab["[DEC]"], pad_token_id=vocab["[PAD]"], sep_token_id=vocab["[SEP]"],
            **_layers(width, layers),
        ),
        vision_config=dict(image_size=image_size, patch_size=patch, **_layers(width, layers)),
        projection_dim=16,
    )
    model = _seeded(seed, lambda: BlipForQuestionAnswering(config))
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------ detector


def tiny_detector(seed: int = 0, image_size: int = 32, width: int = 32, layers: int = 2, patch: int = 8):
    """A random-weight ``Owlv2ForObjectDetection`` (by default 2 layers of width 32 per tower, patch 8) and its
    processor.

    OWLv2 is the open-vocabulary detector of :class:`gotr1.metrics.compbench.SpatialScore`; its text tower
    reads the CLIP-style tokenizer of :func:`tiny_clip` and queries are padded to 16 tokens as OWLv2's are.
    """
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    tokenizer = _clip_tokenizer()
    text, vision = _towers(tokenizer, image_size, 16, width, layers, patch)
    # OWL's class head compares vision features with query embeddings of this width.
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=width)
    model = _seeded(seed, lambda: Owlv2ForObjectDetection(config))
    image_processor = Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size})
    return model, Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
