"""Janus-Pro policies: loading, the GoT special tokens, and random-weight presets for tests and benchmarks.

Everything goes through transformers' ``JanusForConditionalGeneration`` / ``JanusProcessor``, so the
code that serves a real checkpoint (``deepseek-community/Janus-Pro-1B`` or a local folder) also serves
the random-weight presets. The GoT-R1 chain format (arXiv 2505.17022) needs four extra special tokens,
``<|obj_start|> <|obj_end|> <|box_start|> <|box_end|>``; :func:`load_policy` adds them when a checkpoint
lacks them and :func:`got_token_ids` records the ids the rest of gotr1 uses.

Departures from the paper: none in behaviour. The presets ``"1b"``/``"7b"`` mirror Janus-Pro's published
dimensions with random weights (for benchmarks only); ``"tiny"`` is a 64-px model with a tokenizer trained
in-process, built in well under a second, for tests.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, JanusConfig, JanusForConditionalGeneration, JanusProcessor, LlamaConfig
from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

from gotr1.chain import BEGIN_OF_IMAGE, GOT_TOKENS

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"
IMAGE_TOKEN = "<image_placeholder>"
END_OF_IMAGE = "<end_of_image>"

# Janus-Pro's language models (DeepSeek-LLM 1.3B / 7B bases), SigLIP-L understanding encoder and VQ-16 tokenizer.
# The tiny preset initialises with std 0.2 (not 0.02) so its random logits are spread out: greedy decoding
# then varies from token to token, which makes parity tests meaningful.
_PRESETS = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, mlp=128, vocab=None, init=0.2),
    "1b": dict(hidden=2048, layers=24, heads=16, kv_heads=16, mlp=5632, vocab=102400, init=0.02),
    # Janus-Pro-1B's layer shapes, vocabularies and 384-px geometry with two decoder layers: a CPU benchmark
    # of generation at real widths in minutes (per-step cost scales with the layer count from here).
    "1b-lite": dict(hidden=2048, layers=2, heads=16, kv_heads=16, mlp=5632, vocab=102400, init=0.02),
    "7b": dict(hidden=4096, layers=30, heads=32, kv_heads=32, mlp=11008, vocab=102400, init=0.02),
}
_PATCH = 16  # both the SigLIP patch and the VQ downsampling factor


@dataclass(frozen=True)
class GoTTokens:
    """Token ids gotr1 needs from a Janus tokenizer.

    ``bos``/``pad`` build prompts and the CFG unconditional rows, ``boi`` (``<begin_of_image>``) ends a
    chain and starts the image, ``eoi`` closes it; the four GoT tags delimit object names and boxes.
    """

    bos: int
    pad: int
    boi: int
    eoi: int
    obj_start: int
    obj_end: int
    box_start: int
    box_end: int


def _token_id(tokenizer, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        return None
    return int(token_id)


def got_token_ids(processor) -> GoTTokens:
    """The :class:`GoTTokens` of a ``JanusProcessor`` (or its tokenizer).

    Raises
    ------
    ValueError
        Naming the missing token, e.g. a GoT tag of a checkpoint not loaded through :func:`load_policy`.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    named = {
        "bos": tokenizer.bos_token,
        "pad": tokenizer.pad_token,
        "boi": BEGIN_OF_IMAGE,
        "eoi": END_OF_IMAGE,
        **dict(zip(("obj_start", "obj_end", "box_start", "box_end"), GOT_TOKENS)),
    }
    ids = {}
    for field_name, token in named.items():
        token_id = None if token is None else _token_id(tokenizer, token)
        if token_id is None:
            raise ValueError(
                f"processor: tokenizer has no {field_name} token ({token!r}); load the policy with "
                "gotr1.policy.model.load_policy, which adds the GoT tokens"
            )
        ids[field_name] = token_id
    return GoTTokens(**ids)


def janus_parts(model) -> JanusForConditionalGeneration:
    """The ``JanusForConditionalGeneration`` inside ``model`` (a PEFT wrapper is looked through)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "prepare_embeddings_for_image_generation"):
        raise TypeError(f"model: expected a JanusForConditionalGeneration, got {type(base).__name__}")
    return base


def num_image_tokens(janus) -> int:
    """Image tokens per picture of a Janus model (576 at 384 px)."""
    return int(janus.config.vision_config.num_image_tokens)


def cache_keyword(model) -> str:
    """The keyword under which transformers' forward and ``generate`` take a KV cache.

    transformers renamed ``past_key_values`` to ``cache`` (5.2x); code that calls transformers' own
    loops (the reference baselines in tests and benchmarks) passes caches under this name.
    """
    forward = janus_parts(model).model.language_model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def add_got_tokens(model: JanusForConditionalGeneration, processor) -> list[str]:
    """Add the GoT tags the tokenizer lacks and give each new row the mean of the existing rows.

    Both the input embedding and the (untied) ``lm_head`` get the mean row, so the new tokens start
    neutral. Rows past ``len(tokenizer)`` that a checkpoint pads its vocabulary with are reused before
    the matrices grow.

    Returns
    -------
    list[str]
        The tokens that were added (empty when the checkpoint already had all four).
    """
    tokenizer = processor.tokenizer
    missing = [t for t in GOT_TOKENS if _token_id(tokenizer, t) is None]
    if not missing:
        return []
    known_rows = len(tokenizer)
    tokenizer.add_tokens(missing, special_tokens=True)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = torch.tensor([_token_id(tokenizer, t) for t in missing])
    with torch.no_grad():
        matrices = {id(m): m for m in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
        for weight in matrices.values():
            mean = weight[:known_rows].float().mean(dim=0)
            weight[new_ids.to(weight.device)] = mean.to(weight.dtype)
    return missing


def load_policy(name_or_path: str, dtype: torch.dtype | str | None = None, device=None):
    """Load a Janus-Pro policy and its processor, adding the GoT tokens when absent.

    Parameters
    ----------
    name_or_path : str
        A hub id (``deepseek-community/Janus-Pro-1B``) or a local folder written by ``save_pretrained``;
        a local folder never touches the network.
    dtype : torch.dtype or str, optional
        Weight dtype (``torch.bfloat16``, ``"bfloat16"``); default: the checkpoint's.
    device : str or torch.device, optional
        Where to put the model; default: CPU.

    Returns
    -------
    (JanusForConditionalGeneration, JanusProcessor)
        The model in eval mode; its tokenizer holds the GoT tokens (see :func:`got_token_ids`).
    """
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype: {dtype!r} is not a torch dtype name")
        dtype = getattr(torch, dtype)
    processor = JanusProcessor.from_pretrained(name_or_path)
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = JanusForConditionalGeneration.from_pretrained(name_or_path, **kwargs)
    add_got_tokens(model, processor)
    if device is not None:
        model.to(device)
    return model.eval(), processor


# ---------------------------------------------------------------------------------------------
# Random-weight presets
# ---------------------------------------------------------------------------------------------


def janus_config(preset: str = "tiny", image_size: int | None = None, vocab_size: int | None = None) -> JanusConfig:
    """A ``JanusConfig`` with Janus-Pro's dimensions (``"1b"``, ``"7b"``) or tiny ones (``"tiny"``).

    Parameters
    ----------
    preset : {"tiny", "1b", "7b"}
    image_size : int, optional
        Pixels per side, a multiple of 16; default 64 for ``"tiny"``, 384 otherwise. The image has
        ``(image_size // 16) ** 2`` tokens (576 at 384 px).
    vocab_size : int, optional
        Text vocabulary; default 102400 for the real presets and 1024 for ``"tiny"``.
    """
    if preset not in _PRESETS:
        raise ValueError(f"preset: expected one of {sorted(_PRESETS)}, got {preset!r}")
    p = _PRESETS[preset]
    tiny = preset == "tiny"
    image_size = (64 if tiny else 384) if image_size is None else image_size
    if image_size < _PATCH or image_size % _PATCH:
        raise ValueError(f"image_size: must be a positive multiple of {_PATCH}, got {image_size}")
    hidden = p["hidden"]
    text = LlamaConfig(
        vocab_size=vocab_size or p["vocab"] or 1024,
        hidden_size=hidden,
        intermediate_size=p["mlp"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        max_position_embeddings=1024 if tiny else 16384,
        rms_norm_eps=1e-6,
        initializer_range=p["init"],
        tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=32 if tiny else 1024,
        num_hidden_layers=1 if tiny else 24,
        num_attention_heads=2 if tiny else 16,
        mlp_ratio=2.0 if tiny else 4.0,
        image_size=image_size,
        patch_size=_PATCH,
        projection_dim=hidden,
        num_image_tokens=(image_size // _PATCH) ** 2,
        initializer_range=p["init"],
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=512 if tiny else 16384,
        latent_channels=32 if tiny else 256,
        base_channels=32 if tiny else 128,
        channel_multiplier=(1, 1, 1, 1, 1) if tiny else (1, 1, 2, 2, 4),
        num_res_blocks=1 if tiny else 2,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
        initializer_range=p["init"],
    )
    return JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq, image_token_id=0, tie_word_embeddings=False
    )


# Words of T2I-CompBench-style prompts (attributes, objects, relations) plus the prompt template, so the
# trained tokenizer has whole-word tokens for them; byte-level BPE still encodes any text.
_WORDS = (
    "the a an and with of on in to is are was were its their his her from for into through over above below "
    "under near next left right top bottom side between behind front around beside "
    "red green blue yellow white black brown pink orange purple grey silver gold colorful bright dark "
    "wooden metallic fabric glass leather plastic rubber fluffy soft smooth rough shiny sleek bumpy "
    "round square rectangular spherical triangular circular oval cubic conical cylindrical pyramidal "
    "oblong teardrop pentagonal diamond crescent tall short small big long "
    "person woman man child girl boy dog cat bird cow sheep horse giraffe elephant bear pig frog rabbit "
    "turtle fish bee butterfly chicken car train airplane boat bicycle chair table desk bench sofa couch "
    "vase cup bowl plate bottle book bag backpack suitcase wallet hat clock lamp rug blanket pillow phone "
    "apple banana pizza cake mirror tree flower flowers plant grass sky clouds sun water ocean beach "
    "mountain road city room kitchen window door wall shelf box ball toy key spoon fork knife candle "
    "gray circle circles triangle triangles squares one two three four five "
    "follow caption generate image chain thought process picture painting holding sitting standing "
    "playing looking wearing walking running"
).split()
_TEMPLATE_TEXT = "<|User|>: Follow the caption to generate an image through a chain of thought process:\n\n<|Assistant|>:"


def _corpus():
    """A fixed, machine-independent training corpus: phrases of the word list and boxed objects.

    Each word also appears bare and capitalised at the start of a line: a name right after
    ``<|obj_start|>`` or a chain's first word has no leading space, and without these forms the BPE
    spells it in pieces ("blue" as 'b','lu','e') that the prompt never uses. Box corners on multiples
    of 50 appear often enough to become whole tokens.
    """
    yield _TEMPLATE_TEXT
    for i, (a, b) in enumerate(itertools.islice(itertools.product(_WORDS, repeat=2), 0, None, 7)):
        x, y = (i * 37) % 1000, (i * 91) % 1000
        yield f"a {a} {b}, ({x},{y}),({min(x + 250, 1000)},{min(y + 310, 1000)}) "
    for word in _WORDS:
        yield "\n".join([word, word.capitalize()] * 64)
    corners = range(0, 1001, 50)
    for i, (x, y) in enumerate(itertools.product(corners, repeat=2)):
        yield f"({x},{y}),({corners[(i * 7) % len(corners)]},{corners[(i * 13) % len(corners)]})"
    yield " ".join(_WORDS)


def _train_tokenizer(with_got_tokens: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN, BEGIN_OF_IMAGE, END_OF_IMAGE]
    if with_got_tokens:
        specials += list(GOT_TOKENS)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1536,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BEGIN_OF_IMAGE, "eoi_token": END_OF_IMAGE},
    )


def _image_processor(image_size: int):
    import transformers

    # transformers >= 5.2x splits a PIL backend off (the default one needs torchvision, which gotr1 avoids).
    cls = getattr(transformers, "JanusImageProcessorPil", None) or transformers.JanusImageProcessor
    return cls(size={"height": image_size, "width": image_size}, min_size=14)


def random_janus(
    preset: str = "tiny",
    *,
    image_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device=None,
    with_got_tokens: bool = True,
):
    """A random-weight Janus model of a :func:`janus_config` preset, with the in-process tokenizer.

    The tokenizer is the small BPE trained here (about 1500 tokens); real presets keep their 102400-row
    vocabulary so the weight bytes match Janus-Pro. ``with_got_tokens=False`` leaves the GoT tags out
    (what an untouched Janus-Pro checkpoint looks like). Weights are initialised on ``device``.

    Returns
    -------
    (JanusForConditionalGeneration, JanusProcessor)
        The model in eval mode; ``generation_config`` carries bos/pad/eos and ``boi_token_id`` so
        transformers' ``generate(..., generation_mode="image")`` runs on it.
    """
    tokenizer = _train_tokenizer(with_got_tokens)
    config = janus_config(preset, image_size, vocab_size=len(tokenizer) if preset == "tiny" else None)
    config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = config.text_config
    text.bos_token_id, text.eos_token_id, text.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = JanusForConditionalGeneration(config)
    if dtype is not None:
        model.to(dtype)
    # A config of its own (not derived from the model config), so save_pretrained/from_pretrained keep it.
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(BEGIN_OF_IMAGE)},
    )
    processor = JanusProcessor(
        image_processor=_image_processor(config.vision_config.image_size),
        tokenizer=tokenizer,
        num_image_tokens=config.vision_config.num_image_tokens,
    )
    return model.eval(), processor


def tiny_janus(seed: int = 0, image_size: int = 64, with_got_tokens: bool = True):
    """The ``"tiny"`` preset (hidden 64, 2 layers, 512-entry codebook, 16 image tokens at 64 px) for tests.

    ``model.save_pretrained(d); processor.save_pretrained(d); load_policy(d)`` round-trips offline.
    """
    return random_janus("tiny", image_size=image_size, seed=seed, with_got_tokens=with_got_tokens)
