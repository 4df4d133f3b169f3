"""Human-preference reward models as image metrics: PickScore, CLIPScore (as a reward) and HPS v2 / v2.1.

Each scores ``score(prompts, images) -> float64 [N]`` in [0, 1] (:class:`gotr1.metrics.metric.Metric`) and keeps
its model's own number as ``raw_scores``; ``normalize`` is the documented map between the two.

| name | class | default model | raw score | map to [0, 1], clipped |
|---|---|---|---|---|
| pickscore | :class:`PickScore` | ``yuvalkirstain/PickScore_v1`` | ``logit_scale.exp() * cos`` | ``(raw - 16) / 10`` |
| clipscore | :class:`CLIPScoreReward` | ``openai/clip-vit-large-patch14`` | ``cos`` | ``2.5 * max(cos, 0)`` |
| hps | :class:`HPSv2` | open_clip ViT-H-14, ``xswu/HPSv2`` v2.1 | ``cos`` | ``(cos - 0.10) / 0.30`` |

``cos`` is the cosine of the image and text embeddings. The ranges come from published scores of
text-to-image models and are wide on purpose: a GRPO group normalises its rewards (``scale_rewards``), so
the slope of an affine map hardly matters there, while every clipped sample loses its rank within the
group. A NaN raw score stays NaN.

ImageReward (Xu et al. 2023) is not included: its checkpoint is a state dict of the original BLIP code
(ViT-L plus a BERT with cross-attention, then an MLP head) that only the ``image-reward`` package loads,
and that package pulls timm, fairscale and torchvision; loading it into transformers' BLIP would need a
key remapping checked against the original, which cannot run beside this CPU torch.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gotr1.metrics.compbench import CLIPScore
from gotr1.metrics.metric import Metric, check_batch, load_model, rgb_images

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's pixel statistics, which open_clip's ViT-H-14 (and so HPS) normalises with."""


def affine_unit(raw, low: float, high: float) -> np.ndarray:
    """``(raw - low) / (high - low)`` clipped to [0, 1]: ``low`` and below -> 0, ``high`` and above -> 1; NaN stays NaN.

    float64, the shape of ``raw``.
    """
    return np.clip((np.asarray(raw, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


class PreferenceMetric(Metric):
    """A preference model as a metric: its own number (``raw_scores``) mapped onto [0, 1] by ``normalize``."""

    LOW: float
    HIGH: float
    """The raw scores mapped to 0 and to 1 (the class docstring says why)."""

    @classmethod
    def normalize(cls, raw) -> np.ndarray:
        """float64, the shape of ``raw``: ``(raw - LOW) / (HIGH - LOW)`` clipped to [0, 1] (:func:`affine_unit`)."""
        return affine_unit(raw, cls.LOW, cls.HIGH)

    @torch.no_grad()
    def raw_scores(self, prompts: list[str], images) -> np.ndarray:
        """float64 [N]: the model's own score of each image with its prompt (the table of the module)."""
        images = rgb_images(images)
        check_batch(prompts, images)
        return self._raw(list(prompts), images)

    def _raw(self, prompts: list[str], images: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def score(self, prompts: list[str], images) -> np.ndarray:
        return self.normalize(self.raw_scores(prompts, images))


def _load_clip(metric: str, path_or_id: str, processor_id: str, device, dtype):
    from transformers import CLIPModel, CLIPProcessor

    model = load_model(metric, path_or_id, lambda: CLIPModel.from_pretrained(path_or_id, dtype=dtype))
    processor = load_model(metric, processor_id, lambda: CLIPProcessor.from_pretrained(processor_id))
    return model.to(device).eval(), processor


# ------------------------------------------------------------------------------------------ PickScore


class PickScore(PreferenceMetric):
    """PickScore (Kirstain et al. 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic's human choices.

    Raw score as the official usage computes it: ``logit_scale.exp() * cos`` of the L2-normalised image and
    prompt embeddings (the checkpoint's scale is about 100, so raw = 100 cos). Published means of
    Stable Diffusion 1.5 to SDXL-class models lie at about 20-23, single images a few points either
    side; ``normalize`` maps ``[LOW, HIGH]`` = [16, 26] linearly onto [0, 1] and clips the rest.
    """

    name = "pickscore"
    DEFAULT_ID = "yuvalkirstain/PickScore_v1"
    PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    """PickScore ships no processor; the official usage takes its base model's."""
    LOW, HIGH = 16.0, 26.0

    def __init__(self, model, processor, batch_size: int = 16):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.clip = CLIPScore(model, processor, batch_size)

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None,
                        processor_id: str = PROCESSOR_ID, **kwargs) -> PickScore:
        return cls(*_load_clip(cls.name, path_or_id, processor_id, device, dtype), **kwargs)

    def _raw(self, prompts: list[str], images: list[np.ndarray]) -> np.ndarray:
        return float(self.model.logit_scale.exp()) * self.clip.cosine(prompts, images)


# ------------------------------------------------------------------------------------------ CLIPScore


class CLIPScoreReward(PreferenceMetric):
    """CLIPScore (Hessel et al. 2021) as a reward: ``CLIP-S = w * max(cos, 0)`` with the paper's ``w = 2.5``.

    The paper chose ``w = 2.5`` so that scores fill about [0, 1] (cosines of matching pairs rarely pass
    0.4), and prefixes every caption with ``"A photo depicts"``; both are kept (``prefix=""`` gives the
    bare-prompt form most text-to-image evaluations use). The raw score is the unclamped cosine;
    ``normalize`` is CLIP-S clipped at 1, reached only at ``cos >= 0.4``. The paper used ViT-B/32; the
    default here is ViT-L/14, the common choice for text-to-image rewards.
    """

    name = "clipscore"
    DEFAULT_ID = "openai/clip-vit-large-patch14"
    WEIGHT = 2.5

    def __init__(self, model, processor, batch_size: int = 16, prefix: str = "A photo depicts "):
        self.model, self.processor, self.batch_size, self.prefix = model, processor, batch_size, prefix
        self.clip = CLIPScore(model, processor, batch_size)

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None, **kwargs) -> CLIPScoreReward:
        return cls(*_load_clip(cls.name, path_or_id, path_or_id, device, dtype), **kwargs)

    @classmethod
    def normalize(cls, raw) -> np.ndarray:
        """float64: ``min(2.5 * max(cos, 0), 1)``; NaN stays NaN."""
        return np.clip(cls.WEIGHT * np.asarray(raw, dtype=np.float64), 0.0, 1.0)

    def _raw(self, prompts: list[str], images: list[np.ndarray]) -> np.ndarray:
        return self.clip.cosine([self.prefix + prompt for prompt in prompts], images)


# ------------------------------------------------------------------------------------------ HPS v2


def longest_side_pad(image, image_size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """HPS's evaluation transform: float32 ``[3, image_size, image_size]`` from a PIL image or uint8 ``[H, W, 3]``.

    Pixels to [0, 1]; the longer side resized to ``image_size`` (bicubic, antialiased, the shorter side
    rounded), centred on a black square (the extra pixel of an odd margin right / below); then
    normalised by ``mean`` and ``std``. HPS evaluates with this letterbox, not CLIP's centre crop.
    """
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255
    height, width = pixels.shape[1:]
    scale = image_size / max(height, width)
    if scale != 1.0:
        size = (round(height * scale), round(width * scale))
        pixels = F.interpolate(pixels[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
        pad_h, pad_w = image_size - size[0], image_size - size[1]
        pixels = F.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _hps_checkpoint(path_or_id: str) -> str:
    """A local file for ``path_or_id``: a version of :attr:`HPSv2.CHECKPOINTS` (downloaded), or a file path."""
    if path_or_id in HPSv2.CHECKPOINTS:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(HPSv2.HUB_REPO, HPSv2.CHECKPOINTS[path_or_id])
    if not Path(path_or_id).is_file():
        raise FileNotFoundError(f"no checkpoint file at {path_or_id} (versions: {', '.join(HPSv2.CHECKPOINTS)})")
    return path_or_id


class HPSv2(PreferenceMetric):
    """Human Preference Score v2 / v2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on HPD v2.

    Raw score as the official ``hpsv2.score`` computes it: the cosine of the L2-normalised image and text
    embeddings, no logit scale (the benchmark tables print 100 cos). The image goes through
    :func:`longest_side_pad`. Published model means of the v2.1 benchmark run from 0.145 (GLIDE) to 0.31
    (SDXL; 0.33 on its best style), single images spreading around them; ``normalize`` maps
    ``[LOW, HIGH]`` = [0.10, 0.40] onto [0, 1], a margin on both sides, and clips the rest. v2 and v2.1 scores are not
    comparable with each other (the official note), so ``describe`` names the checkpoint.

    ``model`` is open_clip-like (``encode_image(pixels)``, ``encode_text(tokens)`` -> features [N, D]),
    ``tokenizer`` maps a list of prompts to token ids [N, L], ``preprocess`` a PIL image to [3, S, S].
    """

    name = "hps"
    DEFAULT_ID = "hps_v2.1"
    HUB_REPO = "xswu/HPSv2"
    CHECKPOINTS = {"hps_v2": "HPS_v2_compressed.pt", "hps_v2.1": "HPS_v2.1_compressed.pt"}
    """Version -> the checkpoint's file name in ``HUB_REPO``, as the official package names them."""
    ARCHITECTURE = "ViT-H-14"
    LOW, HIGH = 0.10, 0.40

    def __init__(self, model, tokenizer, preprocess=longest_side_pad, batch_size: int = 16,
                 checkpoint: str | None = None):
        self.model, self.tokenizer, self.preprocess = model, tokenizer, preprocess
        self.batch_size, self.checkpoint = batch_size, checkpoint

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None, **kwargs) -> HPSv2:
        """``path_or_id``: ``"hps_v2"`` or ``"hps_v2.1"`` (fetched from ``xswu/HPSv2``), or a checkpoint file."""
        try:
            import open_clip
        except ImportError as err:
            raise ImportError(f'{cls.name}: HPS v2 runs on open_clip, which is not installed; '
                              f'pip install "gotr1[hps]"') from err

        def load():
            state = torch.load(_hps_checkpoint(path_or_id), map_location="cpu", weights_only=True)
            model = open_clip.create_model(cls.ARCHITECTURE, pretrained=None)
            model.load_state_dict(state.get("state_dict", state))
            return model

        model = load_model(cls.name, path_or_id, load).to(device, dtype).eval()
        return cls(model, open_clip.get_tokenizer(cls.ARCHITECTURE), checkpoint=path_or_id, **kwargs)

    def describe(self) -> str:
        return f"{self.name} ({self.checkpoint})" if self.checkpoint else self.name

    def _raw(self, prompts: list[str], images: list[np.ndarray]) -> np.ndarray:
        parameter = next(self.model.parameters())
        out = [np.zeros(0)]
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            pixels = torch.stack([self.preprocess(Image.fromarray(image)) for image in images[start:end]])
            tokens = self.tokenizer(list(prompts[start:end])).to(parameter.device)
            image_features = self.model.encode_image(pixels.to(parameter.device, parameter.dtype)).float()
            text_features = self.model.encode_text(tokens).float()
            cosine = (F.normalize(image_features, dim=-1) * F.normalize(text_features, dim=-1)).sum(-1)
            out.append(cosine.double().cpu().numpy())
        return np.concatenate(out)


# ------------------------------------------------------------------------------------------ tiny models


class OpenCLIPStandIn(torch.nn.Module):
    """open_clip's scoring API over a transformers ``CLIPModel``, so :class:`HPSv2` runs offline on tiny CLIPs.

    ``encode_image`` / ``encode_text`` return the projected features ``[N, D]`` (normalised when asked, as
    open_clip's do); ``tokenize`` pads and truncates to ``context_length`` as open_clip's tokenizer does.
    """

    def __init__(self, model, tokenizer, context_length: int = 77):
        super().__init__()
        self.model, self.tokenizer, self.context_length = model, tokenizer, context_length

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=image).pooler_output
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=text).pooler_output
        return F.normalize(features, dim=-1) if normalize else features

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """int64 [N, context_length]; padding after the end token leaves CLIP's causal text tower unchanged."""
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                               return_tensors="pt")["input_ids"]


PREFERENCE_MODELS = {"pickscore": PickScore, "clipscore": CLIPScoreReward, "hps": HPSv2}


def tiny(name: str, seed: int = 0) -> PreferenceMetric:
    """A preference metric of :data:`PREFERENCE_MODELS` on a random-weight tiny CLIP (scores are noise).

    PickScore and CLIPScore get :func:`gotr1.metrics.tiny_models.tiny_clip`'s model and processor; HPS
    gets the same model behind :class:`OpenCLIPStandIn`, with :func:`longest_side_pad` at its image size. The
    model is shifted by :func:`~gotr1.metrics.tiny_models.centre_similarities`, so the scores fall inside each
    reward's range and differ per image and prompt (unshifted, random weights score every image 0).
    """
    if name not in PREFERENCE_MODELS:
        raise ValueError(f"name: unknown preference model {name!r} (known: {', '.join(PREFERENCE_MODELS)})")
    from gotr1.metrics.tiny_models import centre_similarities, tiny_clip

    model, processor = tiny_clip(seed=seed)
    centre_similarities(model, processor)
    if name != "hps":
        return PREFERENCE_MODELS[name](model, processor)
    stand_in = OpenCLIPStandIn(model, processor.tokenizer, model.config.text_config.max_position_embeddings)
    preprocess = partial(longest_side_pad, image_size=model.config.vision_config.image_size)
    return HPSv2(stand_in, stand_in.tokenize, preprocess, checkpoint=f"tiny seed {seed}")
