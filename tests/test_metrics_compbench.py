"""T2I-CompBench metrics: the official formulas on hand-made inputs, then each metric end to end on tiny models."""

from importlib.resources import files
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gotr1.metrics import nouns, tiny_models
from gotr1.metrics.compbench import (
    METRIC_FOR_CATEGORY,
    BlipVQAScore,
    CLIPScore,
    SpatialScore,
    ThreeInOneScore,
    load_metrics,
    phrase_product,
    vqa_question,
    yes_probability,
)
from gotr1.eval.protocols import SPACY_INSTALL
from gotr1.metrics.metric import Metric, MetricLoadError
from gotr1.metrics.spatial import (
    DISTANCE_THRESHOLD,
    IOU_THRESHOLD,
    box_iou,
    official_frame,
    relative_position,
    spatial_relation,
    spatial_rule,
    unidet_label,
    unidet_labels,
)
from gotr1.metrics.three_in_one import complex_kind, three_in_one

BENCH = files("gotr1").joinpath("assets/t2i_compbench")


def _images(n: int, height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_metrics():
    return load_metrics(list(METRIC_FOR_CATEGORY), tiny=True)


@pytest.fixture
def rules(monkeypatch):
    """Force the rule-based chunker, whether or not spaCy is installed."""
    monkeypatch.setattr(nouns, "_spacy", lambda: None)


# ---------------------------------------------------------------------------------------------- BLIP-VQA


def test_yes_probability_is_the_two_token_share_of_the_softmax():
    logits = torch.randn(7, 50, dtype=torch.float64) * 4
    probs = torch.softmax(logits, dim=-1)
    expected = (probs[:, 3] / (probs[:, 3] + probs[:, 9])).numpy()
    got = yes_probability(logits[:, 3].numpy(), logits[:, 9].numpy())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(yes_probability([0.0, 800.0, -800.0], [0.0, 0.0, 0.0]), [0.5, 1.0, 0.0], atol=1e-12)


def test_phrase_product_multiplies_and_is_nan_without_questions():
    assert phrase_product([0.5, 0.4, 0.9]) == pytest.approx(0.18, abs=1e-12)
    assert phrase_product([0.7]) == pytest.approx(0.7, abs=1e-12)
    assert np.isnan(phrase_product([]))


def test_vqa_question_is_blips_pre_question():
    assert vqa_question("a green bench") == "a green bench?"
    assert vqa_question('The "Red" (old) car.') == "the red old car?"
    assert vqa_question(" ".join(["word"] * 60)).split(" ") == ["word"] * 50


class _FakeBlip(torch.nn.Module):
    """Stands in for BlipForQuestionAnswering: yes logit = image mean + 0.1 * question length, no logit = 0.3.

    Records the question ids it was given, to check BLIP's [ENC] start.
    """

    def __init__(self, vocab_size: int, yes_id: int, no_id: int, start_id: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vision_config=SimpleNamespace(image_size=32),
                                      text_config=SimpleNamespace(vocab_size=vocab_size))
        self.decoder_start_token_id = start_id
        self.vocab_size, self.yes_id, self.no_id = vocab_size, yes_id, no_id
        self.question_ids = []

    def vision_model(self, pixel_values, interpolate_pos_encoding):
        assert not interpolate_pos_encoding
        return SimpleNamespace(last_hidden_state=pixel_values.mean(dim=(1, 2, 3))[:, None, None])

    def text_encoder(self, input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask):
        self.question_ids.append(input_ids.clone())
        return SimpleNamespace(last_hidden_state=encoder_hidden_states)

    def text_decoder(self, input_ids, encoder_hidden_states, encoder_attention_mask):
        assert (input_ids == self.decoder_start_token_id).all() and input_ids.shape[1] == 1
        logits = torch.zeros(len(input_ids), 1, self.vocab_size)
        logits[:, 0, self.yes_id] = encoder_hidden_states[:, 0, 0] + 0.1 * encoder_attention_mask.sum(1)
        logits[:, 0, self.no_id] = 0.3
        return SimpleNamespace(logits=logits)


def test_blip_vqa_scores_the_product_over_phrases_with_stubbed_logits(rules):
    _, processor = tiny_models.tiny_blip_vqa()
    tokenizer = processor.tokenizer
    yes, no, start = (tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no", "[DEC]"))
    model = _FakeBlip(len(tokenizer), yes, no, start)
    metric = BlipVQAScore(model, processor, batch_size=2, image_size=32)
    prompts = ["a green bench and a blue bowl", "...", "a red car", "a round cookie and a square container",
               "a black and white cat sits in a white sink"]
    images = _images(len(prompts))
    got = metric.score(prompts, images)

    assert got.shape == (5,) and got.dtype == np.float64 and np.isnan(got[1])
    for i, prompt in enumerate(prompts):
        phrases = nouns.noun_phrases(prompt)[0]
        if not phrases:
            continue
        pixels = processor.image_processor(images=[images[i]], size={"height": 32, "width": 32},
                                           return_tensors="pt")["pixel_values"]
        lengths = [len(tokenizer(f"{p}?")["input_ids"]) for p in phrases]  # [CLS] words ? [SEP]
        expected = np.prod([yes_probability(pixels.mean().item() + 0.1 * n, 0.3) for n in lengths])
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, err_msg=prompt)
    enc = tokenizer.convert_tokens_to_ids("[ENC]")
    assert all((ids[:, 0] == enc).all() for ids in model.question_ids), "questions must start with BLIP's [ENC]"


def test_blip_enc_token_falls_back_to_the_row_after_dec():
    """A tokenizer without [ENC] (as transformers' BLIP ones may be) still starts questions with BLIP's [ENC] row."""
    from transformers import BertTokenizer

    model, processor = tiny_models.tiny_blip_vqa()
    vocab = processor.tokenizer.get_vocab()
    enc = vocab.pop("[ENC]")
    processor.tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    assert processor.tokenizer.convert_tokens_to_ids("[ENC]") == processor.tokenizer.unk_token_id
    assert BlipVQAScore(model, processor, image_size=32).enc_token_id == enc == vocab["[DEC]"] + 1


# ---------------------------------------------------------------------------------------------- noun phrases


@pytest.mark.parametrize("category", ["color", "shape", "texture"])
def test_every_attribute_prompt_has_one_to_eight_phrases(category):
    for prompt in BENCH.joinpath(f"{category}_val.txt").read_text(encoding="utf-8").splitlines():
        phrases, chunker = nouns.noun_phrases(prompt)
        assert chunker in ("spacy", "rules")
        assert 1 <= len(phrases) <= 8 and all(p.strip() for p in phrases), (prompt, phrases)


@pytest.mark.parametrize("prompt, expected", [
    ("a green bench and a blue bowl", ["a green bench", "a blue bowl"]),
    ("a metallic desk lamp and a fluffy sweater", ["a metallic desk lamp", "a fluffy sweater"]),
    ("a round cookie and a square container", ["a round cookie", "a square container"]),
    ("rubber sole shoes and fluffy clouds", ["rubber sole shoes", "fluffy clouds"]),
    ("A black and white cat sits in a white sink.", ["A black and white cat", "a white sink"]),
    ("a girl on the left of a frog", ["a girl", "a frog"]),  # "the left" is dropped as officially
    ("an oblong cucumber and a teardrop plum.", ["an oblong cucumber", "a teardrop plum"]),
])
def test_rule_chunker_gives_the_exact_phrases(rules, prompt, expected):
    assert nouns.noun_phrases(prompt) == (expected, "rules")


class _FakeDoc:
    """A spaCy ``Doc`` stand-in: tokens with ``text`` and ``pos_``, and ``noun_chunks``."""

    def __init__(self, tagged, chunks):
        self.tokens = [SimpleNamespace(text=text, pos_=pos) for text, pos in tagged]
        self.noun_chunks = [SimpleNamespace(text=chunk) for chunk in chunks]

    def __iter__(self):
        return iter(self.tokens)


def test_spacy_route_filters_and_caps_noun_chunks(monkeypatch):
    chunks = ["a traffic light", "the left", "top", "the side", "the right"] + [f"a cup {i}" for i in range(9)]
    tagged = [("a", "DET"), ("traffic", "NOUN"), ("light", "NOUN"), ("on", "ADP"), ("the", "DET"),
              ("left", "NOUN"), ("of", "ADP"), ("a", "DET"), ("red", "ADJ"), ("dog", "NOUN")]
    monkeypatch.setattr(nouns, "_spacy", lambda: lambda text: _FakeDoc(tagged, chunks))
    assert nouns.noun_phrases("ignored") == (["a traffic light"] + [f"a cup {i}" for i in range(7)], "spacy")
    assert nouns.spatial_objects("ignored") == ("traffic", "dog")  # first and last NOUN, as officially
    assert nouns.without_adjectives("ignored") == "a traffic light on the left of a dog"
    assert nouns.complex_spatial_objects("ignored") == ("light", "dog")  # "on the left" at token 3


def _official_spacy():
    """spaCy's en_core_web_sm, or a skip saying why (it installs from GitHub releases, not the package index)."""
    spacy = pytest.importorskip("spacy", reason=f"spaCy is not installed ({SPACY_INSTALL})")
    try:
        return spacy.load("en_core_web_sm")
    except OSError:
        pytest.skip(f"spaCy's en_core_web_sm is not installed ({SPACY_INSTALL})")


@pytest.mark.parametrize("category", ["color", "shape", "texture", "complex"])
def test_blip_questions_equal_spacys_official_questions(category):
    nlp = _official_spacy()
    assert nouns.chunker() == "spacy"
    for prompt in BENCH.joinpath(f"{category}_val.txt").read_text(encoding="utf-8").splitlines()[:60]:
        # BLIP_vqa.py: every noun chunk but four spatial words, the first 8, each "{chunk}?" through pre_question
        chunks = [c.text for c in nlp(prompt).noun_chunks if c.text not in ["top", "the side", "the left", "the right"]]
        official = [vqa_question(chunk) for chunk in chunks[:8]]
        assert [vqa_question(p) for p in nouns.noun_phrases(prompt)[0]] == official, prompt


def test_rule_chunker_keeps_at_most_eight_phrases(rules):
    prompt = " and ".join(f"a red {name}" for name in "cup bowl vase lamp desk chair sofa book pen key".split())
    phrases, _ = nouns.noun_phrases(prompt)
    assert phrases == [f"a red {name}" for name in "cup bowl vase lamp desk chair sofa book".split()]


def test_rule_parses_of_spatial_and_complex_prompts(rules):
    assert nouns.spatial_objects("a girl on the top of a frog") == ("girl", "frog")
    assert nouns.spatial_objects("a mouse on side of a key") == ("mouse", "key")
    assert nouns.spatial_objects("the of a") is None
    assert nouns.complex_spatial_objects("The fluffy cat is on the left of the soft pillow.") == ("cat", "pillow")
    assert nouns.complex_spatial_objects("The red hat was on top of the brown coat rack.") == ("hat", "coat")
    assert nouns.complex_spatial_objects("The black phone was resting on the brown charger.") is None
    assert nouns.without_adjectives("The red hat was on top of the brown coat rack.") == \
        "The hat was on top of the coat rack ."


# ---------------------------------------------------------------------------------------------- spatial rule


def _box(cx, cy, w=20.0, h=20.0):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def test_relation_words_are_found_in_official_order():
    assert spatial_relation("a giraffe next to a lamp") == "next to"
    assert spatial_relation("a girl on the top of a frog") == "on the top of"
    assert spatial_relation("The hat was on top of the rack.") == "on top of"
    assert spatial_relation("a bee on the right of a refrigerator") == "on the right of"
    assert spatial_relation("a cat and a dog") is None


def test_official_frame_is_resize_479_max_480():
    assert official_frame(512, 512) == (479, 479)
    assert official_frame(384, 384) == (479, 479)
    assert official_frame(60, 40) == (480, 320)  # longer side capped at 480, shorter scaled to match
    assert official_frame(40, 60) == (320, 480)


@pytest.mark.parametrize("relation, dx, dy, expected", [
    ("on the left of", 50.0, 10.0, 1.0),     # box2 to the right: box1 is on its left
    ("on the left of", -50.0, 10.0, 0.0),
    ("on the left of", 50.0, 50.0, 0.0),     # |dx| == |dy| is not horizontal
    ("on the left of", 50.0, 49.999, 1.0),
    ("on the right of", -50.0, 10.0, 1.0),
    ("on the right of", 50.0, 10.0, 0.0),
    ("on the top of", 10.0, 50.0, 1.0),      # box2 below: box1 on its top (y grows downwards)
    ("on the top of", 10.0, -50.0, 0.0),
    ("on the bottom of", 10.0, -50.0, 1.0),
    ("on the bottom of", 10.0, 50.0, 0.0),
    ("on top of", 10.0, 50.0, 0.0),          # the official rule has no branch for "on top of"
    (None, 10.0, 50.0, 0.0),
])
def test_directional_relations(relation, dx, dy, expected):
    assert relative_position(relation, _box(100, 100), _box(100 + dx, 100 + dy)) == expected


def test_iou_threshold_edges():
    box1 = (0.0, 0.0, 100.0, 100.0)
    # box2 shifted right by s overlaps (100 - s) * 100 of 100 * 100 each: IoU = (100 - s) / (100 + s)
    just_under = 81.9  # IoU 0.0995 < 0.1: full score
    just_over = 81.7   # IoU 0.1007 >= 0.1: threshold / IoU
    for shift, under in ((just_under, True), (just_over, False)):
        box2 = (shift, 0.0, 100.0 + shift, 100.0)
        iou = box_iou(box1, box2)
        assert (iou < IOU_THRESHOLD) == under
        expected = 1.0 if under else IOU_THRESHOLD / iou
        assert relative_position("on the left of", box1, box2) == pytest.approx(expected, abs=1e-12)
    box2 = (0.0, 0.0, 100.0, 100.0)
    assert relative_position("on the left of", box1, box2) == 0.0  # same centre: no direction


@pytest.mark.parametrize("relation", ["next to", "near", "on side of"])
def test_distance_threshold_edges(relation):
    far = DISTANCE_THRESHOLD
    assert relative_position(relation, _box(0, 0), _box(far - 0.01, far - 0.01)) == 1.0
    assert relative_position(relation, _box(0, 0), _box(far, 10)) == 1.0  # one axis under is enough
    assert relative_position(relation, _box(0, 0), _box(far, far)) == pytest.approx(1.0, abs=1e-12)
    assert relative_position(relation, _box(0, 0), _box(300, far + 0.01)) == pytest.approx(far / 300, abs=1e-12)
    assert relative_position(relation, _box(0, 0), _box(-200, 400)) == pytest.approx(far / 400, abs=1e-12)


def test_spatial_rule_weights_and_cut():
    left, right = _box(100, 100), _box(200, 100)
    assert spatial_rule("on the left of", left, 0.8, right, 0.6) == pytest.approx(0.25 * 0.8 + 0.25 * 0.6 + 0.5)
    assert spatial_rule("on the left of", left, 0.0, right, 0.0) == pytest.approx(0.5)  # at the cut: kept
    # wrong side: 0.25 (c1 + c2) < 0.5 whatever the confidences
    assert spatial_rule("on the right of", left, 0.99, right, 0.99) == 0.0
    assert spatial_rule("on the right of", left, 1.0, right, 1.0) == pytest.approx(0.5)
    assert spatial_rule("near", _box(0, 0), 0.9, _box(400, 400), 0.9) == pytest.approx(0.45 + 0.5 * 150 / 400)
    assert spatial_rule("near", _box(0, 0), 0.5, _box(400, 400), 0.5) == 0.0  # 0.25 + 0.1875 < 0.5
    # a missing object: 0.25 conf at most, always cut to 0
    assert spatial_rule("on the left of", left, 1.0, None, None) == 0.0
    assert spatial_rule("on the left of", None, None, right, 1.0) == 0.0
    assert spatial_rule("on the left of", None, None, None, None) == 0.0


class _FakeOwl(torch.nn.Module):
    """Stands in for Owlv2ForObjectDetection: the same logits [boxes, queries] and boxes [boxes, 4] for every image."""

    def __init__(self, logits, boxes):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=16))
        self.logits, self.boxes = torch.tensor(logits), torch.tensor(boxes)

    def forward(self, input_ids, attention_mask, pixel_values):
        assert len(input_ids) == 2 * len(pixel_values)
        batch = len(pixel_values)
        return SimpleNamespace(logits=self.logits.expand(batch, -1, -1), pred_boxes=self.boxes.expand(batch, -1, -1))


def test_detect_takes_the_best_box_per_query_in_the_official_frame():
    _, processor = tiny_models.tiny_detector()
    # box 1 wins query 0; box 0 wins query 1 but with sigmoid(-3) = 0.047, under the 0.1 threshold
    owl = _FakeOwl([[-10.0, -3.0], [2.0, -10.0], [-10.0, -10.0]],
                   [[0.1, 0.1, 0.1, 0.1], [0.5, 0.25, 0.2, 0.1], [0.9, 0.9, 0.1, 0.1]])
    (first, second), = SpatialScore(owl, processor).detect([_images(1, height=40, width=60)[0]], [("cat", "dog")])
    # padded square side 60 -> official frame (480, 320) of the 60 x 40 image: 480 px per unit on both axes
    np.testing.assert_allclose(first[0], (192.0, 96.0, 288.0, 144.0), atol=1e-4)
    assert first[1] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    assert second == (None, None)


def test_spatial_score_applies_the_rule_to_the_detections(rules):
    _, processor = tiny_models.tiny_detector()
    # query 0 (first noun) found at the left, query 1 (last noun) at the right, both with confidence 0.88
    owl = _FakeOwl([[2.0, -10.0], [-10.0, 2.0]], [[0.2, 0.5, 0.2, 0.2], [0.8, 0.5, 0.2, 0.2]])
    conf = 1 / (1 + np.exp(-2.0))
    prompts = ["a cat on the left of a dog", "a cat on the right of a dog", "a cat near a dog", "the of a"]
    got = SpatialScore(owl, processor, batch_size=3).score(prompts, _images(4))
    np.testing.assert_allclose(got[:3], [0.5 * conf + 0.5, 0.0, 0.5 * conf + 0.5], atol=1e-9)
    assert np.isnan(got[3])  # no noun: not scorable
    complex_got = SpatialScore(owl, processor, complex=True).score(["The cat sat in the box.", prompts[0]],
                                                                  _images(2))
    np.testing.assert_allclose(complex_got, [0.0, 0.5 * conf + 0.5], atol=1e-9)  # no relation: 0 as officially


def test_unidet_labels_match_exactly_with_the_person_mapping():
    labels = unidet_labels()
    assert len(labels) == 677 and {"cat", "dog", "person", "table, desk", "tissue "} <= labels
    assert [unidet_label(n) for n in ("girl", "man", "person", "cat", "Cat", "table", "tissue", "wallet", None)] == \
        ["person", "person", "person", "cat", None, None, None, None, None]


class _PerfectDetector(SpatialScore):
    """Finds whatever it is asked for with confidence 0.9: the first query at the left, the second at the right."""

    def __init__(self, **kwargs):
        super().__init__(None, None, **kwargs)
        self.asked = []

    def detect(self, images, queries):
        self.asked += queries
        return [[((10.0, 200.0, 110.0, 300.0), 0.9), ((300.0, 200.0, 400.0, 300.0), 0.9)] for _ in images]


def test_a_noun_outside_unidets_vocabulary_is_never_detected(rules):
    prompts = ["a cat on the left of a dog", "a wallet on the left of a dog", "a girl on the left of a dog",
               "a table on the left of a wallet"]
    metric = _PerfectDetector()
    got = metric.score(prompts, _images(4))
    # both found and well placed: 0.25 (0.9 + 0.9) + 0.5; a wallet never is, so 0.25 * 0.9 < 0.5 -> 0
    np.testing.assert_allclose(got, [0.95, 0.0, 0.95, 0.0], atol=1e-12)
    assert metric.asked == [("cat", "dog"), ("dog", "dog"), ("person", "dog")]  # the last image asks nothing
    assert _PerfectDetector(vocabulary="open").score(prompts[1:2], _images(1)).tolist() == pytest.approx([0.95])
    complex_got = _PerfectDetector(complex=True).score(["The wallet is on the left of the dog.",
                                                         "The fluffy cat is on the left of the soft pillow."],
                                                        _images(2))
    np.testing.assert_allclose(complex_got, [0.0, 0.95], atol=1e-12)
    with pytest.raises(ValueError, match="vocabulary: expected one of .* got 'coco'"):
        SpatialScore(None, None, vocabulary="coco")


# ---------------------------------------------------------------------------------------------- CLIP


def test_clip_cosine_matches_a_hand_computation():
    model, processor = tiny_models.tiny_clip()
    metric = CLIPScore(model, processor, batch_size=2)
    prompts = ["a green bench and a blue bowl", "a cat", "a man is holding a cup of coffee"]
    images = list(_images(3))
    expected = []
    with torch.no_grad():
        for prompt, image in zip(prompts, images):
            pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
            text = processor.tokenizer([prompt], return_tensors="pt")
            image_features = model.get_image_features(pixel_values=pixels)
            text_features = model.get_text_features(**text)
            image_features = getattr(image_features, "pooler_output", image_features)[0].double()
            text_features = getattr(text_features, "pooler_output", text_features)[0].double()
            expected.append((image_features @ text_features / image_features.norm() / text_features.norm()).item())
    cosine = metric.cosine(prompts, images)
    np.testing.assert_allclose(cosine, expected, atol=1e-5)
    np.testing.assert_allclose(metric.score(prompts, images), np.clip(expected, 0, 1), atol=1e-5)


def test_complex_clip_reads_the_prompt_without_adjectives(rules):
    model, processor = tiny_models.tiny_clip()
    prompts = ["The red hat was on top of the brown coat rack."]
    images = _images(1)
    got = CLIPScore(model, processor, complex=True).cosine(
        [nouns.without_adjectives(prompts[0])], list(images))
    assert CLIPScore(model, processor, complex=True).score(prompts, images) == pytest.approx(max(got[0], 0), abs=1e-6)


# ---------------------------------------------------------------------------------------------- 3-in-1


def test_complex_kinds_follow_the_shipped_lists():
    spatial = BENCH.joinpath("complex_val_spatial.txt").read_text(encoding="utf-8").splitlines()
    action = BENCH.joinpath("complex_val_action.txt").read_text(encoding="utf-8").splitlines()
    both = BENCH.joinpath("complex_val_spatialaction.txt").read_text(encoding="utf-8").splitlines()
    assert {complex_kind(p) for p in spatial} == {"spatial"}
    assert {complex_kind(p) for p in action} == {"action"}
    assert {complex_kind(p) for p in both} == {"spatial_action"}
    assert complex_kind(spatial[0].upper()) == "spatial"  # keys are lower-cased, as officially
    assert complex_kind("a prompt in no list") == "spatial_action"


def test_three_in_one_mean_on_hand_made_scores():
    kinds = ["spatial", "action", "spatial_action", "spatial", "spatial_action", "action"]
    attribute = [0.8, 0.6, 0.9, np.nan, np.nan, np.nan]
    action = [np.nan, 0.3, 0.3, 0.1, np.nan, np.nan]
    spatial = [0.5, np.nan, 0.0, 0.4, np.nan, 0.7]
    got = three_in_one(kinds, attribute, action, spatial)
    expected = [(0.8 + 0.5) / 2, (0.6 + 0.3) / 2, (0.9 + 0.3 + 0.0) / 3, 0.4, np.nan, np.nan]
    np.testing.assert_allclose(got, expected, atol=1e-12)


class _Fixed(Metric):
    """A metric that scores every prompt by a table and records what it was asked."""

    def __init__(self, table: dict):
        self.table, self.asked = table, []

    def score(self, prompts, images):
        self.asked += list(prompts)
        return np.array([self.table[p] for p in prompts], dtype=np.float64)


def test_three_in_one_metric_runs_each_sub_metric_on_its_prompts_only():
    spatial_prompt = BENCH.joinpath("complex_val_spatial.txt").read_text(encoding="utf-8").splitlines()[0]
    action_prompt = BENCH.joinpath("complex_val_action.txt").read_text(encoding="utf-8").splitlines()[0]
    other = "a prompt in no list"
    prompts = [spatial_prompt, action_prompt, other]
    attribute = _Fixed({spatial_prompt: 0.2, action_prompt: 0.4, other: 0.6})
    action = _Fixed({action_prompt: 1.0, other: 0.3})
    spatial = _Fixed({spatial_prompt: 0.8, other: 0.0})
    got = ThreeInOneScore(attribute, action, spatial).score(prompts, _images(3))
    np.testing.assert_allclose(got, [0.5, 0.7, 0.3], atol=1e-12)
    assert action.asked == [action_prompt, other] and spatial.asked == [spatial_prompt, other]


# ---------------------------------------------------------------------------------------------- end to end


def test_load_metrics_shares_one_object_per_class(tiny_metrics):
    assert tiny_metrics["color"] is tiny_metrics["shape"] is tiny_metrics["texture"]
    three = tiny_metrics["complex"]
    assert three.attribute is tiny_metrics["color"]
    assert three.action.model is tiny_metrics["non_spatial"].model and three.action.complex
    assert three.spatial.model is tiny_metrics["spatial"].model and three.spatial.complex
    with pytest.raises(ValueError, match="numeracy"):
        load_metrics(["numeracy"], tiny=True)


@pytest.mark.parametrize("category", list(METRIC_FOR_CATEGORY))
def test_each_metric_end_to_end_on_tiny_models(tiny_metrics, category):
    prompts = BENCH.joinpath(f"{category}_val.txt").read_text(encoding="utf-8").splitlines()[:3] + ["..."]
    images = _images(len(prompts))
    scores = tiny_metrics[category].score(prompts, images)
    assert scores.shape == (len(prompts),) and scores.dtype == np.float64
    finite = scores[~np.isnan(scores)]
    assert finite.size >= 3 and ((finite >= 0) & (finite <= 1)).all(), scores
    # arrays, PIL images and a list all give the same scores
    from PIL import Image

    again = tiny_metrics[category].score(prompts, [Image.fromarray(image) for image in images])
    np.testing.assert_allclose(again, scores, atol=1e-6)


@pytest.mark.parametrize("category", list(METRIC_FOR_CATEGORY))
def test_count_mismatch_is_a_value_error(tiny_metrics, category):
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        tiny_metrics[category].score(["a cat", "a dog"], _images(3))


@pytest.mark.parametrize("cls, metric", [(BlipVQAScore, "blip_vqa"), (CLIPScore, "clip"),
                                         (SpatialScore, "spatial")])
def test_from_pretrained_of_a_missing_model_names_metric_and_id(tmp_path, cls, metric):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(MetricLoadError, match=f"{metric}: cannot load '{missing}'"):
        cls.from_pretrained(missing)


def test_three_in_one_from_pretrained_names_the_failing_sub_metric(tmp_path):
    missing = str(tmp_path / "no-such-blip")
    with pytest.raises(MetricLoadError, match=f"blip_vqa: cannot load '{missing}'"):
        ThreeInOneScore.from_pretrained((missing, str(tmp_path / "clip"), str(tmp_path / "owl")))


def test_from_pretrained_loads_a_saved_folder(tmp_path):
    model, processor = tiny_models.tiny_clip()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    prompts, images = ["a cat", "a green bench"], _images(2)
    loaded = CLIPScore.from_pretrained(str(tmp_path))
    np.testing.assert_allclose(loaded.cosine(prompts, list(images)), CLIPScore(model, processor).cosine(
        prompts, list(images)), atol=1e-6)
