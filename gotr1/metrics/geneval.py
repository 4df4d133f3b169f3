"""GenEval (Ghosh et al., NeurIPS 2023): is each image right for its prompt's object metadata? 1.0 or 0.0.

Protocol, as the official evaluator (https://github.com/djghosh13/geneval, ``evaluation/evaluate_images.py`` and
``evaluation/summary_scores.py``; the rules themselves are in :mod:`gotr1.metrics.geneval_rules`): 553 prompts
(shipped in ``gotr1/assets/geneval``), 4 images per prompt; a Mask2Former (Swin-S, COCO instance) detector whose
detections count above a confidence of 0.3 (0.9 for counting prompts), at most 16 per class; each object's colour
by CLIP ViT-L/14 zero-shot on its crop, background outside the mask painted ``#999``; positions from box centres
with a 0.1 relative margin; the score is the mean over the six tags of each tag's accuracy.

Departures from the official evaluator:

* The detector is transformers' port of Mask2Former (``facebook/mask2former-swin-small-coco-instance``): the
  same architecture and COCO training recipe, but the original authors' Detectron2 training, not the mmdet
  checkpoint ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` the official evaluator loads, so numbers may
  differ by that (two trainings of one model, not one model twice). It runs at the official input scale: mmdet's
  test pipeline resizes to (1333, 800) keeping the aspect ratio and pads to a multiple of 32, so a 384-px image
  is seen at 800 px (:data:`OFFICIAL_SCALE`, set on the processor by :meth:`GenEvalScore.from_pretrained`), and
  the instances come from mmdet's post-processing (:func:`official_instances`: mask logits resized to the
  padded input, cropped, resized to the image, then binarised and scored), not transformers' (which works on a
  384-px square). Resizing is PIL's bilinear, mmdet's is OpenCV's.
* CLIP is transformers' ``openai/clip-vit-large-patch14`` (the same weights as open_clip's ``ViT-L-14`` /
  ``openai``), run without mixed precision.
* A tag with no scored image leaves the overall score NaN (see :func:`summarize`).

Use: ``GenEvalScore.from_pretrained(device="cuda").score(prompts, images)``; ``gotr1 eval`` with the geneval
protocol writes the folder layout the official scripts read.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

import numpy as np
import torch
import torch.nn.functional as F

from gotr1.metrics.geneval_rules import (
    COLOR_TEMPLATES,
    COLORS,
    TAGS,
    THRESHOLD,
    ClassDetections,
    DetectedObject,
    judge,
    object_crop,
    summarize,
)
from gotr1.metrics.metric import Metric, check_batch, load_model, rgb_images

__all__ = ["TAGS", "GenEvalScore", "ClipColorClassifier", "load_metadata", "object_names", "summarize",
           "tiny_mask2former", "detector_class_names", "masks_to_boxes", "official_instances"]

_ASSETS = "assets/geneval"
OFFICIAL_SCALE = {"shortest_edge": 800, "longest_edge": 1333}
"""mmdet's ``Resize(img_scale=(1333, 800), keep_ratio=True)`` as a transformers processor size."""
SIZE_DIVISOR = 32
"""mmdet's ``Pad(size_divisor=32)``."""
MAX_PER_IMAGE = 100
"""mmdet's ``test_cfg.max_per_image``: the (query, class) pairs kept per image."""
# COCO's spellings (the detector checkpoints' id2label) of the three classes GenEval names differently.
COCO_SPELLINGS = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}


# ------------------------------------------------------------------------------------------- shipped prompts


def load_metadata() -> list[dict]:
    """The 553 GenEval prompts (``tag``, ``include``, optional ``exclude``, ``prompt``), in file order."""
    text = files("gotr1").joinpath(_ASSETS, "evaluation_metadata.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def object_names() -> list[str]:
    """The 80 COCO class names as GenEval writes them, in COCO's (and mmdet's) class order."""
    text = files("gotr1").joinpath(_ASSETS, "object_names.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def _metadata_by_prompt() -> dict[str, dict]:
    return {row["prompt"]: row for row in load_metadata()}


# ----------------------------------------------------------------------------------------------- detections


def detector_class_names(id2label: dict) -> dict[int, str]:
    """Detector label id -> GenEval class name.

    The official script maps mmdet's class index ``i`` to line ``i`` of ``object_names.txt``; transformers'
    COCO checkpoints list the same 80 classes in the same order under COCO's spellings. Mapping by name (COCO's
    ``mouse``, ``remote``, ``keyboard`` to GenEval's) gives the same table and stays right for a reordered label set.
    """
    known = set(object_names())
    table = {int(i): COCO_SPELLINGS.get(label, label) for i, label in id2label.items()}
    unknown = sorted(label for label in table.values() if label not in known)
    if unknown:
        raise ValueError(f"detector id2label: {unknown[:5]} are not COCO classes; GenEval needs a COCO detector")
    return table


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """float ``[k, 4]`` tight boxes of bool masks ``[k, H, W]``: ``(x_min, y_min, x_max + 1, y_max + 1)``, zeros
    for an empty mask (mmdet's ``mask2bbox``, which gives the official boxes)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float64)
    for k, mask in enumerate(masks):
        xs, ys = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if xs.size and ys.size:
            boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def official_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor, input_size: tuple[int, int],
                       resized_size: tuple[int, int], image_size: tuple[int, int], min_score: float = THRESHOLD,
                       max_per_image: int = MAX_PER_IMAGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's instances as mmdet's Mask2Former post-processing gives them (``MaskFormerFusionHead``).

    The ``max_per_image`` best (query, class) pairs of the class softmax (the no-object class left out); each
    pair's mask logits are resized (bilinear) to the padded input, cropped to the resized image, resized to
    the image, and binarised at 0; its score is the class probability times the mean sigmoid over its mask.

    Parameters
    ----------
    class_logits : torch.Tensor
        ``[Q, C + 1]`` class logits of the queries (last: no object).
    mask_logits : torch.Tensor
        ``[Q, h, w]`` mask logits (a quarter of the input's size).
    input_size, resized_size, image_size : tuple of int
        ``(height, width)`` of the padded input, of the resized image inside it, and of the image.
    min_score : float
        Instances scoring at or below this are dropped. A score never exceeds its class probability, so pairs
        at or under it are dropped before their masks are resized: the kept ones are exactly mmdet's.

    Returns
    -------
    labels : np.ndarray
        int64 ``[k]`` class ids.
    scores : np.ndarray
        float64 ``[k]``.
    masks : np.ndarray
        bool ``[k, H, W]`` at ``image_size``.
    """
    probabilities = torch.softmax(class_logits.float(), dim=-1)[:, :-1]
    num_classes = probabilities.shape[1]
    top, pairs = probabilities.flatten().topk(min(max_per_image, probabilities.numel()))
    top, pairs = top[top > min_score], pairs[top > min_score]
    if not len(pairs):
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, *image_size), dtype=bool)
    masks = mask_logits[pairs // num_classes].float()[None]
    masks = F.interpolate(masks, size=tuple(input_size), mode="bilinear", align_corners=False)
    masks = masks[..., :resized_size[0], :resized_size[1]]
    masks = F.interpolate(masks, size=tuple(image_size), mode="bilinear", align_corners=False)[0]
    binary = masks > 0
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    scores = (top * mask_scores).double()
    kept = scores > min_score
    return ((pairs % num_classes)[kept].cpu().numpy(), scores[kept].cpu().numpy(), binary[kept].cpu().numpy())


def _model_device(model) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _pooled(output) -> torch.Tensor:
    """The projected embedding, whether a transformers version returns a tensor or an output with ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# -------------------------------------------------------------------------------------------------- colours


class ClipColorClassifier:
    """Each object's colour: CLIP zero-shot over COLORS on its crop (:func:`object_crop`), the official classifier.

    A colour's text embedding is the mean of its COLOR_TEMPLATES' normalised embeddings (with the object's class
    name), renormalised; the crop's normalised image embedding picks the colour of highest cosine. Text
    classifiers are cached per class name.
    """

    def __init__(self, model, processor, batch_size: int = 16):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self._classifiers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def classifier(self, classname: str) -> torch.Tensor:
        """float32 ``[len(COLORS), D]`` unit text embeddings, one per colour."""
        if classname not in self._classifiers:
            device, _ = _model_device(self.model)
            texts = [t.format(color=c, object=classname) for c in COLORS for t in COLOR_TEMPLATES]
            tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(device)
            embedded = F.normalize(_pooled(self.model.get_text_features(**tokens)).float(), dim=-1)
            per_color = embedded.view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(dim=1)
            self._classifiers[classname] = F.normalize(per_color, dim=-1)
        return self._classifiers[classname]

    @torch.no_grad()
    def __call__(self, image: np.ndarray, objects: list[DetectedObject], classname: str) -> list[str]:
        weights = self.classifier(classname)
        device, dtype = _model_device(self.model)
        crops = [object_crop(image, obj) for obj in objects]
        picks = []
        for start in range(0, len(crops), self.batch_size):
            pixels = self.processor.image_processor(images=crops[start:start + self.batch_size], return_tensors="pt")
            features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(device, dtype))
            picks += (F.normalize(_pooled(features).float(), dim=-1) @ weights.T).argmax(dim=-1).tolist()
        return [COLORS[i] for i in picks]


# --------------------------------------------------------------------------------------------------- metric


class GenEvalScore(Metric):
    """GenEval's correctness per image: 1.0 right, 0.0 wrong, NaN for a prompt with no GenEval metadata.

    Parameters
    ----------
    detector, detector_processor
        A COCO ``Mask2FormerForUniversalSegmentation`` and its image processor.
    clip, clip_processor
        A ``CLIPModel`` and its ``CLIPProcessor`` (colours).
    batch_size : int
        Images per detector forward.

    Attributes
    ----------
    last_reasons : list
        Per image of the last call, the official ``reason`` ("" when right, None when not scorable).
    """

    name = "geneval"

    def __init__(self, detector, detector_processor, clip, clip_processor, batch_size: int = 8):
        self.detector = detector.eval()
        self.detector_processor = detector_processor
        self.class_names = detector_class_names(detector.config.id2label)
        self.classify_colors = ClipColorClassifier(clip, clip_processor)
        self.batch_size = batch_size
        self.last_reasons: list[str | None] = []

    @classmethod
    def from_pretrained(cls, detector_id: str = "facebook/mask2former-swin-small-coco-instance",
                        clip_id: str = "openai/clip-vit-large-patch14", device="cpu", dtype=None) -> "GenEvalScore":
        """Both models by hub id or local folder; one that cannot be loaded raises ``MetricLoadError``."""
        from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, Mask2FormerForUniversalSegmentation

        detector = load_model(cls.name, detector_id, lambda: Mask2FormerForUniversalSegmentation.from_pretrained(
            detector_id, dtype=dtype).to(device))
        detector_processor = load_model(cls.name, detector_id, lambda: AutoImageProcessor.from_pretrained(
            detector_id, size=OFFICIAL_SCALE, size_divisor=SIZE_DIVISOR))
        clip = load_model(cls.name, clip_id, lambda: CLIPModel.from_pretrained(clip_id, dtype=dtype).to(device))
        clip_processor = load_model(cls.name, clip_id, lambda: CLIPProcessor.from_pretrained(clip_id))
        return cls(detector, detector_processor, clip, clip_processor)

    def score(self, prompts: list[str], images, metadata: list[dict] | None = None) -> np.ndarray:
        """float64 ``[N]``: 1.0 / 0.0 per image, NaN where the prompt has no metadata.

        ``metadata`` (one dict per image) overrides the lookup of each prompt in the shipped metadata file.
        """
        verdicts = self.details(prompts, images, metadata)
        return np.array([np.nan if v is None else float(v["correct"]) for v in verdicts], dtype=np.float64)

    def details(self, prompts: list[str], images, metadata: list[dict] | None = None) -> list[dict | None]:
        """Per image, as the official ``results.jsonl`` records it: ``tag``, ``correct``, ``reason`` and the kept
        boxes per class (``details``: ``[x1, y1, x2, y2, score]`` rows); None where not scorable."""
        images = rgb_images(images)
        check_batch(prompts, images)
        if metadata is None:
            metadata = [_metadata_by_prompt().get(prompt) for prompt in prompts]
        elif len(metadata) != len(images):
            raise ValueError(f"metadata and images: {len(metadata)} metadata rows for {len(images)} images")
        verdicts: list[dict | None] = [None] * len(images)
        scorable = [i for i, row in enumerate(metadata) if row]
        for start in range(0, len(scorable), self.batch_size):
            chunk = scorable[start:start + self.batch_size]
            for i, found in zip(chunk, self.detect([images[i] for i in chunk])):
                correct, reason, objects = judge(images[i], found, metadata[i], self.classify_colors)
                kept = {c: [[*map(float, o.box), o.score] for o in objs] for c, objs in objects.items()}
                verdicts[i] = {"tag": metadata[i]["tag"], "correct": correct, "reason": reason, "details": kept}
        self.last_reasons = [None if v is None else v["reason"] for v in verdicts]
        return verdicts

    @torch.no_grad()
    def detect(self, images: list[np.ndarray]) -> list[dict[str, ClassDetections]]:
        """The detector's instances (score above 0.3, the lower threshold) per GenEval class, per image.

        The processor's size decides the input scale (the official 800 px from :meth:`from_pretrained`);
        instances follow mmdet's post-processing (:func:`official_instances`) at each image's own size.
        """
        if not images:
            return []
        device, dtype = _model_device(self.detector)
        inputs = self.detector_processor(images=images, return_tensors="pt")
        pixels, valid = inputs["pixel_values"], inputs["pixel_mask"]
        outputs = self.detector(pixel_values=pixels.to(device, dtype), pixel_mask=valid.to(device))
        found = []
        for i, image in enumerate(images):
            resized = (int(valid[i].any(dim=1).sum()), int(valid[i].any(dim=0).sum()))
            labels, scores, masks = official_instances(outputs.class_queries_logits[i], outputs.masks_queries_logits[i],
                                                       tuple(pixels.shape[-2:]), resized, image.shape[:2])
            found.append(self._by_class(labels, scores, masks))
        return found

    def _by_class(self, labels: np.ndarray, scores: np.ndarray, masks: np.ndarray) -> dict[str, ClassDetections]:
        names = np.array([self.class_names[int(label)] for label in labels])
        boxes = masks_to_boxes(masks)
        return {name: ClassDetections(boxes[names == name], scores[names == name], masks[names == name])
                for name in dict.fromkeys(names.tolist())}


# ------------------------------------------------------------------------------------------- tiny detector


def tiny_mask2former(seed: int = 0, num_labels: int = 80):
    """A random-weight ``Mask2FormerForUniversalSegmentation`` (a 4-stage Swin of width 16, 20 queries, width 32)
    and its image processor (64-px input), ``id2label`` the first ``num_labels`` COCO classes in COCO's spelling.

    For tests and CPU benchmarks: builds offline in well under a second and runs on 32-64 px images. Weights
    depend only on ``seed``; the global RNG is left untouched.
    """
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessorPil,
        SwinConfig,
    )

    coco = {v: k for k, v in COCO_SPELLINGS.items()}
    names = [coco.get(name, name) for name in object_names()]
    if not 1 <= num_labels <= len(names):
        raise ValueError(f"num_labels: expected 1 to {len(names)} COCO classes, got {num_labels}")
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=20,
        num_labels=num_labels, id2label=dict(enumerate(names[:num_labels])),
        label2id={name: i for i, name in enumerate(names[:num_labels])},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Mask2FormerForUniversalSegmentation(config).eval()
    return model, Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
