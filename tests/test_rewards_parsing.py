"""Reward plumbing without a judge: templates, tolerant reply parsing, coordinate math, combination."""

import math

import numpy as np
import pytest

from gotr1.chain import Box, box_iou
from gotr1.rewards import (
    TEMPLATES,
    RewardConfig,
    best_iou,
    combine,
    combine_scores,
    extract_json,
    normalize_score,
    parse_bboxes,
    parse_score,
    pixels_to_unit,
    smart_resize,
)

# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------


def test_templates_carry_the_paper_rubrics_and_reply_formats():
    sem = TEMPLATES["semantic"].render(prompt="a red cube", reasoning="a red cube on a table")
    for criterion in ("Completeness", "Faithfulness", "Consistency", "Clarity"):
        assert criterion in sem
    assert '"a red cube"' in sem and '"a red cube on a table"' in sem
    assert '{"score": <integer from 0 to 10>}' in sem and "0 to 10" in sem
    spa = TEMPLATES["spatial"].render(prompt="a cat left of a dog")
    assert "top-left corner" in spa and "left of" in spa and '{"score"' in spa
    pi = TEMPLATES["prompt_image"].render(prompt="two blue cups")
    for criterion in ("Objects", "Attributes", "Spatial relations"):
        assert criterion in pi
    ground = TEMPLATES["grounding"].render(object="red apple")
    assert ground == "Locate the red apple, report the bbox coordinates in JSON format."
    assert "bbox_2d" in TEMPLATES["grounding"].reply_format
    assert {t.scale for n, t in TEMPLATES.items() if n != "grounding"} == {10}


def test_template_fields_and_requests():
    sem, spa = TEMPLATES["semantic"], TEMPLATES["spatial"]
    assert sem.fields == ("prompt", "reasoning")
    with pytest.raises(ValueError, match="missing=\\['reasoning'\\]"):
        sem.render(prompt="x")
    with pytest.raises(ValueError, match="extra=\\['oops'\\]"):
        sem.render(prompt="x", reasoning="y", oops="z")
    with pytest.raises(ValueError, match="needs an image"):
        spa.request(prompt="x")
    with pytest.raises(ValueError, match="takes no image"):
        sem.request(image=np.zeros((2, 2, 3), np.uint8), prompt="x", reasoning="y")
    canvas = np.zeros((8, 8, 3), np.uint8)
    request = spa.request(image=canvas, prompt="a {braced} prompt")
    assert [m["role"] for m in request] == ["system", "user"]
    image_part, text_part = request[1]["content"]
    assert image_part == {"type": "image", "image": canvas}
    assert 'Text prompt: "a {braced} prompt"' in text_part["text"]


# ---------------------------------------------------------------------------------------------
# Reply parsing: a corpus of good and malformed replies
# ---------------------------------------------------------------------------------------------

SCORE_REPLIES = [
    ('{"score": 8}', 0.8),
    ('{"score": 10}', 1.0),
    ('{"score": 0}', 0.0),
    ('{"score": 7.5}', 0.75),
    ('```json\n{"score": 8}\n```', 0.8),
    ('```\n{"score": 3}\n```', 0.3),
    ('Here is my evaluation.\n{"score": 6}\nThe layout is mostly right.', 0.6),
    ("{'score': 9}", 0.9),
    ('{"score": "4"}', 0.4),
    ('{"score": "7/10"}', 0.7),
    ('{"score": "85%"}', 0.85),
    ('{"Score": 5, "reason": "the {cat} is missing"}', 0.5),
    ('{"score": 8,}', 0.8),
    ('{"rating": 2}', 0.2),
    ('[{"score": 4}]', 0.4),
    ('{"score": 80}', 0.8),  # a 0-100 answer is detected
    ('{"score": 100}', 1.0),
    ('{"score": 250}', None),  # out of range on any scale: no score
    ('{"score": 1e309}', None),  # read whole: infinite, no score
    ("Score: 1e308", None),  # read whole, not as 1
    ("Score: 7.5e0 / 10", 0.75),
    ("Score: 8.", 0.8),
    ('{"score": -3}', 0.0),
    ("Score: 8/10", 0.8),
    ("Final rating - 4 out of 10.", 0.4),
    ("7", 0.7),
    ('"6"', 0.6),
    ("I would give it a score of 9.", 0.9),
]

UNREADABLE_SCORES = [
    None,
    "",
    "   ",
    "The image is lovely.",
    '{"score": "high"}',
    '{"verdict": 7, "other": 3}',
    '{"score": true}',
    '{"score": NaN}',
    "ra\u05ec\x0bW\x7f random tokens [ { ]",
    '{"score": }',
]


@pytest.mark.parametrize("reply, expected", SCORE_REPLIES)
def test_parse_score_reads_good_and_sloppy_replies(reply, expected):
    assert parse_score(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply", UNREADABLE_SCORES)
def test_parse_score_gives_none_for_unreadable_replies(reply):
    assert parse_score(reply) is None


def test_normalize_score_rule():
    assert normalize_score(5) == 0.5
    assert normalize_score(10) == 1.0
    assert normalize_score(10.5) == pytest.approx(0.105)  # above the rubric: read on 0-100
    assert normalize_score(100) == 1.0 and normalize_score(101) is None
    assert normalize_score(-1) == 0.0
    assert normalize_score(3, denominator=5) == pytest.approx(0.6)
    assert normalize_score(30, scale=100) == pytest.approx(0.3)
    assert normalize_score(math.nan) is None and normalize_score(1, denominator=0) is None


def test_extract_json_finds_values_anywhere():
    assert extract_json('noise {"a": [1, {"b": "x]"}]} tail') == {"a": [1, {"b": "x]"}]}
    assert extract_json("```python\n{'a': 1}\n```") == {"a": 1}
    assert extract_json('text [1, 2, 3] more') == [1, 2, 3]
    assert extract_json("no json here") is None
    assert extract_json(None) is None


BOX_REPLIES = [
    ('[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]', [(10, 20, 110, 220)]),
    ('```json\n[\n  {"bbox_2d": [10, 20, 110, 220], "label": "cat"}\n]\n```', [(10, 20, 110, 220)]),
    ('{"bbox_2d": [10, 20, 110, 220], "label": "cat"}', [(10, 20, 110, 220)]),
    ('[{"bbox_2d": ["10", "20", "110", "220"]}]', [(10, 20, 110, 220)]),
    ('[{"bbox_2d": [110, 220, 10, 20]}]', [(10, 20, 110, 220)]),  # corners ordered
    ("[{'bbox': [1, 2, 3, 4], 'label': 'dog'}, {'bbox': [5, 6, 7, 8]}]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
    ("[1.5, 2, 30, 40]", [(1.5, 2, 30, 40)]),
    ("The cat is at [12, 30, 200, 310] in the image.", [(12, 30, 200, 310)]),
    ("[]", []),
]


@pytest.mark.parametrize("reply, expected", BOX_REPLIES)
def test_parse_bboxes_reads_qwen_grounding_replies(reply, expected):
    assert parse_bboxes(reply) == [tuple(map(float, b)) for b in expected]


@pytest.mark.parametrize("reply", [None, "", "I cannot find it.", '[{"bbox_2d": [1, 2, 3]}]', '{"label": "cat"}',
                                   '[{"bbox_2d": [1, 2, "x", 4]}]'])
def test_parse_bboxes_gives_none_for_unreadable_replies(reply):
    assert parse_bboxes(reply) is None


# ---------------------------------------------------------------------------------------------
# Coordinates: smart_resize, resized pixels -> 0-1000, IoU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, expected", [
    (384, 384, (392, 392)),  # a GoT image: what Qwen2.5-VL-7B sees and answers about
    (28, 28, (56, 56)),  # below min_pixels: scaled up, rounded up
    (10, 20, (56, 84)),
    (1000, 3000, (1008, 2996)),
    (8000, 4000, (5068, 2520)),  # above max_pixels: scaled down, rounded down
])
def test_smart_resize_hand_values(height, width, expected):
    assert smart_resize(height, width) == expected


def test_smart_resize_matches_transformers():
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(8, 4000, size=2))
        if max(h, w) / min(h, w) > 200:
            continue
        low = int(rng.choice([28 * 28, 56 * 56, 256 * 28 * 28]))
        high = int(rng.choice([low, 1280 * 28 * 28, 16384 * 28 * 28]))
        assert smart_resize(h, w, 28, low, high) == reference(h, w, 28, low, high), (h, w, low, high)


def test_smart_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="positive size"):
        smart_resize(0, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


def test_pixels_to_unit_and_iou_against_chain_boxes():
    # The judge saw the 384x384 image as 392x392: its pixel 196 is the middle, i.e. 500 on the chain's scale.
    unit = pixels_to_unit([[0, 0, 196, 392], [98, 98, 294, 294]], 392, 392)
    np.testing.assert_allclose(unit, [[0, 0, 500, 1000], [250, 250, 750, 750]])
    np.testing.assert_allclose(pixels_to_unit([[-10, 5, 500, 100]], 392, 196),
                               [[0, 1000 * 5 / 196, 1000, 1000 * 100 / 196]])  # clipped to the frame
    # Interpreting the answer in the sent image's pixels (384) instead would shift it by 2%.
    chain_box = Box(0, 0, 500, 1000)
    assert best_iou([chain_box.as_tuple()], unit[:1])[0] == pytest.approx(1.0)
    wrong = pixels_to_unit([[0, 0, 196, 392]], 384, 384)
    assert best_iou([chain_box.as_tuple()], wrong)[0] == pytest.approx(500 / (196 / 384 * 1000))
    # Best match among several grounded boxes; none grounded scores 0.
    iou = best_iou([[0, 0, 500, 500], [500, 500, 1000, 1000]], [[0, 0, 500, 500], [0, 0, 250, 250]])
    np.testing.assert_allclose(iou, [1.0, 0.0])
    np.testing.assert_allclose(best_iou([[0, 0, 10, 10]], np.zeros((0, 4))), [0.0])
    a, b = np.array([100, 100, 300, 300]), np.array([200, 200, 400, 400])
    assert box_iou(a, b) == pytest.approx(100 * 100 / (2 * 200 * 200 - 100 * 100))


# ---------------------------------------------------------------------------------------------
# Combination
# ---------------------------------------------------------------------------------------------

SEM, SPA, RI, PI = [0.8, 0.2, 1.0], [0.4, 0.6, 0.0], [0.5, 0.9, 1.0], [0.9, 0.1, 1.0]


def test_combine_scores_is_the_one_nan_rule_for_rule_and_judge_rewards():
    scores = {"a": [0.5, np.nan, 0.2, np.nan], "b": [0.4, 0.6, np.nan, np.nan]}
    np.testing.assert_allclose(combine_scores(scores, "product"), [0.2, 0.6, 0.2, np.nan], rtol=1e-6)
    np.testing.assert_allclose(combine_scores(scores, "sum"), [0.45, 0.6, 0.2, np.nan], rtol=1e-6)
    weighted = combine_scores(scores, "sum", {"a": 3.0, "b": 1.0})
    np.testing.assert_allclose(weighted, [(3 * 0.5 + 0.4) / 4, 0.6, 0.2, np.nan], rtol=1e-6)
    averaged = combine_scores({**scores, "c": [0.5, 0.5, 0.5, 0.5]}, "product", averaged=("a", "b"))
    np.testing.assert_allclose(averaged, [0.45 * 0.5, 0.6 * 0.5, 0.2 * 0.5, 0.5], rtol=1e-6)
    assert combine_scores(scores, "product").dtype == np.float32
    with pytest.raises(ValueError, match="mode"):
        combine_scores(scores, "mean")
    with pytest.raises(ValueError, match="different lengths"):
        combine_scores({"a": [0.5], "b": [0.5, 0.5]})


def test_combine_product_is_the_paper_formula():
    got = combine(SEM, SPA, RI, PI)
    expected = [0.9 * (0.8 + 0.4) / 2 * 0.5, 0.1 * (0.2 + 0.6) / 2 * 0.9, 1.0 * 0.5 * 1.0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_combine_weights_and_sum_mode():
    cfg = RewardConfig(w_sem=3, w_spa=1, w_ri=2, w_pi=0.5)
    expected = [0.9**0.5 * (3 * 0.8 + 0.4) / 4 * 0.5**2]
    np.testing.assert_allclose(combine(SEM[:1], SPA[:1], RI[:1], PI[:1], config=cfg), expected, rtol=1e-6)
    cfg = RewardConfig(mode="sum", w_sem=1, w_spa=1, w_ri=2, w_pi=4)
    expected = [(0.8 + 0.4 + 2 * 0.5 + 4 * 0.9) / 8]
    np.testing.assert_allclose(combine(SEM[:1], SPA[:1], RI[:1], PI[:1], config=cfg), expected, rtol=1e-6)
    cfg = RewardConfig(w_aes=1)
    np.testing.assert_allclose(combine(SEM, SPA, RI, PI, aes=[0.5, 1, 0], config=cfg),
                               combine(SEM, SPA, RI, PI) * np.array([0.5, 1, 0]), rtol=1e-6)
    # A zero weight drops the component entirely, even if it is missing or NaN.
    cfg = RewardConfig(w_ri=0)
    np.testing.assert_allclose(combine(SEM, SPA, None, PI, config=cfg), [0.9 * 0.6, 0.1 * 0.4, 0.5], rtol=1e-6)


def test_combine_leaves_out_components_that_do_not_apply_and_rejects_bad_configs():
    # NaN = not applicable (e.g. R_RI without an image): left out of the product, not a zero, not a NaN total.
    got = combine([0.5, 0.5, np.nan], [0.5, np.nan, np.nan], [np.nan, 0.8, np.nan], [1.0, 0.5, np.nan])
    np.testing.assert_allclose(got[:2], [0.5, 0.5 * 0.8 * 0.5], rtol=1e-6)
    assert np.isnan(got[2]), "no component applies: no score"
    with pytest.raises(ValueError, match="ri is None"):
        combine(SEM, SPA, None, PI)
    with pytest.raises(ValueError, match="different lengths"):
        combine(SEM, SPA, RI, PI[:2])
    with pytest.raises(ValueError, match="mode"):
        RewardConfig(mode="mean")
    with pytest.raises(ValueError, match="w_pi"):
        RewardConfig(w_pi=-1)
    with pytest.raises(ValueError, match="every weight is 0"):
        RewardConfig(w_sem=0, w_spa=0, w_ri=0, w_pi=0)
    assert RewardConfig(w_sem=0).active == ("spa", "ri", "pi")
