"""T2I-CompBench's metrics, one class each, following the official scripts (github.com/Karine-Huang/T2I-CompBench).

| category | metric | official script |
|---|---|---|
| color, shape, texture | :class:`BlipVQAScore` | ``BLIPvqa_eval/BLIP_vqa.py`` (+ ``models/blip_vqa.py``: ``vqa_prob``) |
| spatial | :class:`SpatialScore` | ``UniDet_eval/2D_spatial_eval.py`` |
| non_spatial | :class:`CLIPScore` | ``CLIPScore_eval/CLIP_similarity.py`` |
| complex | :class:`ThreeInOneScore` | ``3_in_1_eval/3_in_1.py`` over the three above in ``--complex`` mode |

Each scores a batch ``score(prompts, images) -> float64 [N]`` in [0, 1], NaN where the prompt gives the
metric nothing to score. Departures from the official scripts:

- Models load through transformers: BLIP-VQA and CLIP are the same checkpoints; UniDet (Detectron2, a
  closed label set, detections kept above confidence 0.5) is replaced by the open-vocabulary OWLv2, asked
  only for the nouns UniDet's vocabulary holds (the official exact-label matching and person mapping), the
  best box per label kept above ``threshold`` (0.1, OWLv2's usual cut; its confidences run lower than
  UniDet's, an uncalibrated departure). Boxes are measured in the 479-pixel frame UniDet saw, where the
  150-pixel threshold applies.
- Prompt parsing uses spaCy's ``en_core_web_sm`` when installed, else the rule-based chunker of
  :mod:`gotr1.metrics.nouns` (install: ``pip install spacy && python -m spacy download en_core_web_sm``).
- BLIP-VQA: a prompt with no noun phrase scores NaN (the official product over no question is 1);
  per-question probabilities are not rounded to 4 decimals between questions.
- CLIP: the cosine is clamped below at 0 (the official score is the raw cosine, in practice positive);
  prompts longer than CLIP's 77 tokens are truncated (the official tokenizer refuses them).
- 3-in-1: a NaN sub-score is left out of the mean (the project's combination rule).

Numeracy (T2I-CompBench++'s ``UniDet_eval/numeracy_eval.py``) is not implemented: its parse depends on the
benchmark's singular/plural object vocabulary (``examples/dataset/new_objects.txt``, not shipped here),
``word2number`` and UniDet's class names for duplicate merging, none of which carry over to an
open-vocabulary detector without redefining the metric.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from gotr1.metrics.metric import Metric, check_batch, load_model, rgb_images
from gotr1.metrics.nouns import chunker, complex_spatial_objects, noun_phrases, spatial_objects, without_adjectives
from gotr1.metrics.spatial import official_frame, spatial_relation, spatial_rule, unidet_label
from gotr1.metrics.three_in_one import complex_kind, three_in_one


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _load(metric: str, path_or_id: str, model_cls, processor_cls, device, dtype):
    model = load_model(metric, path_or_id, lambda: model_cls.from_pretrained(path_or_id, dtype=dtype))
    processor = load_model(metric, path_or_id, lambda: processor_cls.from_pretrained(path_or_id))
    return model.to(device).eval(), processor


def _pooled(output) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and an output with ``pooler_output`` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# ------------------------------------------------------------------------------------------ BLIP-VQA


def yes_probability(yes_logit, no_logit) -> np.ndarray:
    """``P(yes) / (P(yes) + P(no))`` of the first answer token, from its two logits (``vqa_prob``).

    The softmax's normaliser cancels, so this is ``sigmoid(yes_logit - no_logit)``; float64, any shape.
    """
    margin = np.asarray(yes_logit, dtype=np.float64) - np.asarray(no_logit, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -margin))  # sigmoid without overflow for large |margin|


def vqa_question(phrase: str, max_words: int = 50) -> str:
    """BLIP-VQA's question about a noun phrase: ``"{phrase}?"`` through BLIP's ``pre_question``.

    ``pre_question`` (``BLIPvqa_eval/data/utils.py``) lower-cases, deletes ``.!"()*#:;~``, strips trailing
    spaces and keeps the first 50 words.
    """
    question = re.sub(r'[.!"()*#:;~]', "", f"{phrase}?".lower()).rstrip(" ")
    return " ".join(question.split(" ")[:max_words])


def phrase_product(probabilities) -> float:
    """An image's BLIP-VQA score: the product of its questions' yes-probabilities; NaN with no question."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return float(np.prod(probabilities)) if probabilities.size else float("nan")


class BlipVQAScore(Metric):
    """Attribute binding (color, shape, texture): BLIP-VQA's "yes" probability for each noun phrase.

    Per image: the prompt's noun phrases (:func:`gotr1.metrics.nouns.noun_phrases`, at most 8), one question
    ``"{phrase}?"`` each (:func:`vqa_question`). The question, its first token replaced by BLIP's ``[ENC]``
    as the original BLIP does (transformers' own ``generate`` keeps ``[CLS]``), is encoded against the
    480-pixel image; the decoder reads its start token ``[DEC]`` once, and the first answer token's logits
    give ``P(yes) / (P(yes) + P(no))`` (:func:`yes_probability`); the score is the product over the phrases.
    """

    name = "blip_vqa"
    DEFAULT_ID = "Salesforce/blip-vqa-capfilt-large"
    IMAGE_SIZE = 480
    """BLIP_vqa.py's ``configs/vqa.yaml``: images resized (bicubic) to 480 x 480."""
    MAX_QUESTION_TOKENS = 35

    def __init__(self, model, processor, batch_size: int = 16, image_size: int = IMAGE_SIZE,
                 enc_token_id: int | None = None):
        self.model, self.processor, self.batch_size, self.image_size = model, processor, batch_size, image_size
        tokenizer = processor.tokenizer
        self.yes_id, self.no_id = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        if tokenizer.unk_token_id in (self.yes_id, self.no_id):
            raise ValueError(f"{self.name}: the tokenizer has no single 'yes' / 'no' token; not a BLIP-VQA processor")
        self.start_id = model.decoder_start_token_id
        if enc_token_id is None:
            # The original BLIP adds [DEC] then [ENC] to BERT's vocabulary; transformers' tokenizers may omit
            # [ENC], whose row still follows [DEC]'s in the checkpoint's embeddings.
            enc = tokenizer.convert_tokens_to_ids("[ENC]")
            enc_token_id = enc if enc not in (None, tokenizer.unk_token_id) else self.start_id + 1
        assert enc_token_id < model.config.text_config.vocab_size, f"[ENC] id {enc_token_id} is past the vocabulary"
        self.enc_token_id = enc_token_id

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None, **kwargs) -> BlipVQAScore:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        metric = cls(*_load(cls.name, path_or_id, BlipForQuestionAnswering, BlipProcessor, device, dtype), **kwargs)
        metric.source = path_or_id
        return metric

    @property
    def native_resolution(self) -> bool:
        """Whether the checkpoint's position table is at the resolution it runs at (no resampling)."""
        return self.model.config.vision_config.image_size == self.image_size

    def describe(self) -> str:
        vision = self.model.config.vision_config.image_size
        table = "native" if self.native_resolution else f"resampled from the checkpoint's {vision} px"
        return (f"{self.name} ({self.source or 'model given in memory'}; {self.image_size} px, position table "
                f"{table}; noun phrases: {chunker()})")

    @torch.no_grad()
    def score(self, prompts: list[str], images) -> np.ndarray:
        images = rgb_images(images)
        check_batch(prompts, images)
        phrases = [noun_phrases(prompt)[0] for prompt in prompts]
        scores = np.full(len(prompts), np.nan)
        for start in range(0, len(prompts), self.batch_size):
            rows = [i for i in range(start, min(start + self.batch_size, len(prompts))) if phrases[i]]
            if not rows:
                continue
            owners = [k for k, i in enumerate(rows) for _ in phrases[i]]
            questions = [vqa_question(phrase) for i in rows for phrase in phrases[i]]
            probabilities = self.yes_probabilities([images[i] for i in rows], questions, owners)
            for k, i in enumerate(rows):
                scores[i] = phrase_product(probabilities[np.asarray(owners) == k])
        return scores

    @torch.no_grad()
    def yes_probabilities(self, images: list[np.ndarray], questions: list[str], owners: list[int]) -> np.ndarray:
        """float64 [Q]: P(yes) / (P(yes) + P(no)) of each question about image ``owners[q]``."""
        device, dtype = _device_dtype(self.model)
        size = {"height": self.image_size, "width": self.image_size}
        pixels = self.processor.image_processor(images=images, size=size, return_tensors="pt")["pixel_values"]
        vision_size = self.model.config.vision_config.image_size
        image_embeds = self.model.vision_model(
            pixel_values=pixels.to(device, dtype), interpolate_pos_encoding=self.image_size != vision_size
        ).last_hidden_state[owners]
        text = self.processor.tokenizer(questions, padding="longest", truncation=True,
                                        max_length=self.MAX_QUESTION_TOKENS, return_tensors="pt").to(device)
        text["input_ids"][:, 0] = self.enc_token_id
        question_states = self.model.text_encoder(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"], encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device),
        ).last_hidden_state
        start = torch.full((len(questions), 1), self.start_id, dtype=torch.long, device=device)
        logits = self.model.text_decoder(
            input_ids=start, encoder_hidden_states=question_states, encoder_attention_mask=text["attention_mask"],
        ).logits[:, 0].double().cpu().numpy()
        return yes_probability(logits[:, self.yes_id], logits[:, self.no_id])


# ------------------------------------------------------------------------------------------ CLIP


class CLIPScore(Metric):
    """Non-spatial relations: the cosine of CLIP's image and text embeddings, as CLIP_similarity.py computes it.

    ``cos = <f_img / |f_img|, f_txt / |f_txt|>``, no logit scale, no factor (neither 100 nor 2.5), clamped
    below at 0. ``complex=True`` (the official ``--complex``) first drops the prompt's adjectives
    (:func:`gotr1.metrics.nouns.without_adjectives`), as 3-in-1 reads it.
    """

    name = "clip"
    DEFAULT_ID = "openai/clip-vit-base-patch32"

    def __init__(self, model, processor, batch_size: int = 16, complex: bool = False):
        self.model, self.processor, self.batch_size, self.complex = model, processor, batch_size, complex

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None, **kwargs) -> CLIPScore:
        from transformers import CLIPModel, CLIPProcessor

        return cls(*_load(cls.name, path_or_id, CLIPModel, CLIPProcessor, device, dtype), **kwargs)

    @torch.no_grad()
    def cosine(self, prompts: list[str], images: list[np.ndarray]) -> np.ndarray:
        """float64 [N]: the unclamped cosine of each image with its prompt (as given)."""
        device, dtype = _device_dtype(self.model)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            pixels = self.processor.image_processor(images=images[start:end], return_tensors="pt")["pixel_values"]
            text = self.processor.tokenizer(prompts[start:end], padding=True, truncation=True,
                                            max_length=self.model.config.text_config.max_position_embeddings,
                                            return_tensors="pt").to(device)
            image_features = _pooled(self.model.get_image_features(pixel_values=pixels.to(device, dtype))).float()
            text_features = _pooled(self.model.get_text_features(**text)).float()
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            out.append((image_features * text_features).sum(-1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def score(self, prompts: list[str], images) -> np.ndarray:
        images = rgb_images(images)
        check_batch(prompts, images)
        texts = [without_adjectives(p) for p in prompts] if self.complex else list(prompts)
        return np.clip(self.cosine(texts, images), 0.0, 1.0)


# ------------------------------------------------------------------------------------------ 2D spatial


class SpatialScore(Metric):
    """2D-spatial relations: two detected objects placed by the official geometry rule (:mod:`gotr1.metrics.spatial`).

    The objects are the prompt's first and last noun (``complex=True``: the nouns around the relation,
    :func:`gotr1.metrics.nouns.complex_spatial_objects`); the relation is the first official relation word in
    the prompt. A simple prompt without a noun is NaN; a complex one without exactly two objects is 0, as
    officially.

    ``vocabulary="unidet"`` (the default) matches the nouns as the official script does: girl, boy, man and
    woman become ``person``, and a noun that is not one of UniDet's label strings is never detected
    (:func:`gotr1.metrics.spatial.unidet_label`), however plain it is in the image. OWLv2, standing in for
    UniDet, is queried with the label; its best box above ``threshold`` stands for the object.
    ``vocabulary="open"`` queries OWLv2 with every noun as written (not comparable with the paper's numbers;
    a denser reward signal).

    OWLv2's sigmoid confidences are not on UniDet's scale: they enter the official ``0.25 (c1 + c2)`` term and
    meet the 0.5 cut as they are. ``threshold`` (0.1, OWLv2's usual cut) stands for UniDet's 0.5 detection
    threshold; it was not calibrated against UniDet (no UniDet run here). See the README's evaluation section.
    """

    name = "spatial"
    DEFAULT_ID = "google/owlv2-base-patch16-ensemble"
    VOCABULARIES = ("unidet", "open")

    def __init__(self, model, processor, batch_size: int = 16, threshold: float = 0.1, complex: bool = False,
                 vocabulary: str = "unidet"):
        if vocabulary not in self.VOCABULARIES:
            raise ValueError(f"vocabulary: expected one of {self.VOCABULARIES}, got {vocabulary!r}")
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.threshold, self.complex, self.vocabulary = threshold, complex, vocabulary

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_ID, device="cpu", dtype=None, **kwargs) -> SpatialScore:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        return cls(*_load(cls.name, path_or_id, Owlv2ForObjectDetection, Owlv2Processor, device, dtype), **kwargs)

    def describe(self) -> str:
        return (f"{self.name} (OWLv2 for UniDet, {self.vocabulary} vocabulary, threshold {self.threshold}; "
                f"nouns: {chunker()})")

    def query(self, noun: str) -> str | None:
        """What the detector is asked for a prompt's noun; None when the official detector could never see it."""
        return unidet_label(noun) if self.vocabulary == "unidet" else noun

    @torch.no_grad()
    def score(self, prompts: list[str], images) -> np.ndarray:
        images = rgb_images(images)
        check_batch(prompts, images)
        parse = complex_spatial_objects if self.complex else spatial_objects
        objects = [parse(prompt) for prompt in prompts]
        queries = [None if pair is None else tuple(self.query(noun) for noun in pair) for pair in objects]
        scores = np.full(len(prompts), 0.0 if self.complex else np.nan)
        scores[[i for i, q in enumerate(queries) if q is not None]] = 0.0  # nothing detectable scores 0
        rows = [i for i, q in enumerate(queries) if q is not None and q != (None, None)]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            # an undetectable object still fills its query slot (every image asks two) and is dropped after
            asked = [(q1 or q2, q2 or q1) for q1, q2 in (queries[i] for i in batch)]
            found = self.detect([images[i] for i in batch], asked)
            for i, ((box1, conf1), (box2, conf2)) in zip(batch, found):
                q1, q2 = queries[i]
                box1, conf1 = (box1, conf1) if q1 is not None else (None, None)
                box2, conf2 = (box2, conf2) if q2 is not None else (None, None)
                scores[i] = spatial_rule(spatial_relation(prompts[i]), box1, conf1, box2, conf2)
        return scores

    @torch.no_grad()
    def detect(self, images: list[np.ndarray], queries: list[tuple[str, ...]]) -> list[list[tuple]]:
        """Per image, per query: ``(box, confidence)`` of its best box, or ``(None, None)`` at or under threshold.

        Boxes are ``(x1, y1, x2, y2)`` in the official frame (:func:`gotr1.metrics.spatial.official_frame`).
        OWLv2 predicts boxes relative to the image padded square at its bottom and right, so a box
        scales by the image's longer side before the frame's resize.
        """
        device, dtype = _device_dtype(self.model)
        per_image = len(queries[0])
        assert all(len(q) == per_image for q in queries), "every image needs the same number of queries"
        pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        text = self.processor.tokenizer([q for group in queries for q in group], padding="max_length",
                                        truncation=True, return_tensors="pt",
                                        max_length=self.model.config.text_config.max_position_embeddings)
        out = self.model(input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device),
                         pixel_values=pixels.to(device, dtype))
        logits = out.logits.float()  # [B, boxes, queries]
        best = logits.argmax(dim=1)  # [B, queries]
        confidence = torch.sigmoid(logits.gather(1, best[:, None]))[:, 0].double().cpu().numpy()
        centre_boxes = out.pred_boxes.float().gather(1, best[..., None].expand(-1, -1, 4)).double().cpu().numpy()
        found = []
        for image, confs, boxes in zip(images, confidence, centre_boxes):
            height, width = image.shape[:2]
            frame_w, frame_h = official_frame(width, height)
            side = max(height, width)
            sx, sy = side * frame_w / width, side * frame_h / height
            found.append([
                ((sx * (cx - w / 2), sy * (cy - h / 2), sx * (cx + w / 2), sy * (cy + h / 2)), float(conf))
                if conf > self.threshold else (None, None)
                for conf, (cx, cy, w, h) in zip(confs, boxes)
            ])
        return found


# ------------------------------------------------------------------------------------------ 3-in-1


class ThreeInOneScore(Metric):
    """Complex compositions: the 3-in-1 mean of BLIP-VQA, CLIP and 2D-spatial scores (``3_in_1_eval/3_in_1.py``).

    The official pipeline scores complex prompts with CLIP and the spatial script in ``--complex`` mode;
    pass ``CLIPScore(..., complex=True)`` and ``SpatialScore(..., complex=True)`` (as
    :meth:`from_pretrained` and :func:`load_metrics` do). Each sub-metric runs only on the images whose
    prompt uses it (:func:`complex_kind`).
    """

    name = "three_in_one"

    def __init__(self, attribute: Metric, action: Metric, spatial: Metric):
        self.attribute, self.action, self.spatial = attribute, action, spatial

    def describe(self) -> str:
        return f"{self.name} ({self.attribute.describe()}, {self.action.describe()}, {self.spatial.describe()})"

    @classmethod
    def from_pretrained(cls, path_or_id: tuple[str, str, str] | None = None, device="cpu",
                        dtype=None) -> ThreeInOneScore:
        """``path_or_id``: the (BLIP-VQA, CLIP, detector) ids, each metric's default when None."""
        blip_id, clip_id, detector_id = path_or_id or (BlipVQAScore.DEFAULT_ID, CLIPScore.DEFAULT_ID,
                                                       SpatialScore.DEFAULT_ID)
        return cls(BlipVQAScore.from_pretrained(blip_id, device, dtype),
                   CLIPScore.from_pretrained(clip_id, device, dtype, complex=True),
                   SpatialScore.from_pretrained(detector_id, device, dtype, complex=True))

    @torch.no_grad()
    def score(self, prompts: list[str], images) -> np.ndarray:
        images = rgb_images(images)
        check_batch(prompts, images)
        kinds = [complex_kind(p) for p in prompts]
        subs = {"attribute": (self.attribute, ("spatial", "action", "spatial_action")),
                "action": (self.action, ("action", "spatial_action")),
                "spatial": (self.spatial, ("spatial", "spatial_action"))}
        scores = {}
        for name, (metric, wanted) in subs.items():
            scores[name] = np.full(len(prompts), np.nan)
            rows = [i for i, kind in enumerate(kinds) if kind in wanted]
            if rows:
                scores[name][rows] = metric.score([prompts[i] for i in rows], [images[i] for i in rows])
        return three_in_one(kinds, **scores)


# ------------------------------------------------------------------------------------------ registry

METRIC_FOR_CATEGORY = {
    "color": BlipVQAScore,
    "shape": BlipVQAScore,
    "texture": BlipVQAScore,
    "spatial": SpatialScore,
    "non_spatial": CLIPScore,
    "complex": ThreeInOneScore,
}


def load_metrics(categories, device="cpu", dtype=None, tiny: bool = False,
                 blip_model: str | None = None) -> dict[str, Metric]:
    """One metric per category, categories of one class sharing one object and 3-in-1 sharing their models.

    ``tiny=True`` builds random-weight models (:mod:`gotr1.metrics.tiny_models`) for tests and CPU smoke runs.
    ``blip_model``: the BLIP-VQA checkpoint to load instead of :attr:`BlipVQAScore.DEFAULT_ID` (tiny or not),
    e.g. the original 480-px checkpoint converted by :func:`gotr1.metrics.blip_convert.convert_blip`.
    """
    unknown = [c for c in categories if c not in METRIC_FOR_CATEGORY]
    if unknown:
        raise ValueError(f"categories: unknown {unknown} (known: {', '.join(METRIC_FOR_CATEGORY)})")
    built: dict[type, Metric] = {}

    def get(cls) -> Metric:
        if cls not in built:
            built[cls] = _build(cls, get, device, dtype, tiny, blip_model)
        return built[cls]

    return {category: get(METRIC_FOR_CATEGORY[category]) for category in categories}


def _build(cls, get, device, dtype, tiny: bool, blip_model: str | None) -> Metric:
    if cls is ThreeInOneScore:
        clip, detector = get(CLIPScore), get(SpatialScore)
        return ThreeInOneScore(get(BlipVQAScore), CLIPScore(clip.model, clip.processor, clip.batch_size, complex=True),
                               SpatialScore(detector.model, detector.processor, detector.batch_size,
                                            detector.threshold, complex=True, vocabulary=detector.vocabulary))
    if cls is BlipVQAScore and blip_model:
        return BlipVQAScore.from_pretrained(blip_model, device=device, dtype=dtype)
    if not tiny:
        return cls.from_pretrained(device=device, dtype=dtype)
    from gotr1.metrics import tiny_models

    if cls is BlipVQAScore:
        model, processor = tiny_models.tiny_blip_vqa()
        return BlipVQAScore(model.to(device, dtype), processor, image_size=model.config.vision_config.image_size)
    builder = {CLIPScore: tiny_models.tiny_clip, SpatialScore: tiny_models.tiny_detector}[cls]
    model, processor = builder()
    return cls(model.to(device, dtype), processor)
