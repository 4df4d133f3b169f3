"""GenEval's rules on hand-built detections (thresholds, cap, counts, colours, positions, summary), the shipped
metadata, and the metric end to end with tiny random-weight Mask2Former and CLIP."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gotr1.metrics.geneval import (
    TAGS,
    GenEvalScore,
    detector_class_names,
    load_metadata,
    masks_to_boxes,
    object_names,
    official_instances,
    summarize,
    tiny_mask2former,
)
from gotr1.metrics.geneval_rules import (
    COLORS,
    ClassDetections,
    DetectedObject,
    box_iou,
    evaluate,
    judge,
    object_crop,
    relative_position,
    select_objects,
)
from gotr1.metrics.metric import MetricLoadError
from gotr1.metrics.tiny_models import tiny_clip

IMAGE = np.zeros((64, 64, 3), dtype=np.uint8)


def found(*objects, masks=None):
    """ClassDetections from (x1, y1, x2, y2, score) tuples."""
    rows = np.array(objects, dtype=np.float64).reshape(-1, 5)
    return ClassDetections(rows[:, :4], rows[:, 4], masks)


def spread(n, score, size=8):
    """``n`` non-overlapping boxes of one class, all with ``score``."""
    return found(*[(4 * i, 0, 4 * i + size, size, score) for i in range(n)])


class StubColors:
    """A colour classifier answering from a table: class name -> colours of its objects, best first."""

    def __init__(self, **table):
        self.table = table
        self.calls = []

    def __call__(self, image, objects, classname):
        self.calls.append((classname, len(objects)))
        return list(self.table[classname][: len(objects)])


class NoColors:
    def __call__(self, image, objects, classname):
        raise AssertionError("the colour classifier ran for a prompt without colours")


def meta(tag, *include, exclude=()):
    return {"tag": tag, "include": list(include), "exclude": list(exclude), "prompt": "p"}


# ---------------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize("tag, score, kept", [
    ("single_object", 0.3, False), ("single_object", 0.3001, True),
    ("two_object", 0.3, False), ("colors", 0.300001, True),
    ("counting", 0.9, False), ("counting", 0.9001, True), ("counting", 0.5, False),
])
def test_confidence_threshold_is_strict_at_its_edge(tag, score, kept):
    metadata = meta(tag, {"class": "cat", "count": 1})
    correct, reason, objects = judge(IMAGE, {"cat": found((0, 0, 10, 10, score))}, metadata, NoColors())
    assert correct is kept, reason
    assert ("cat" in objects) is kept
    assert reason == ("" if kept else "expected cat>=1, found 0")


def test_at_most_16_objects_per_class_best_first():
    scores = np.linspace(0.4, 0.99, 20)
    detections = {"cup": found(*[(i, 0, i + 5, 5, s) for i, s in enumerate(scores)])}
    objects = select_objects(detections, 0.3)
    assert len(objects["cup"]) == 16
    kept = [o.score for o in objects["cup"]]
    np.testing.assert_allclose(kept, np.sort(scores)[::-1][:16])
    # the cap applies before exclude: 20 detected cups never reach an exclude count of 17
    metadata = meta("counting", {"class": "cup", "count": 16}, exclude=[{"class": "cup", "count": 17}])
    assert evaluate(IMAGE, objects, metadata, NoColors()) == (True, "")


def test_overlap_suppression_is_off_by_default_and_greedy_when_asked():
    detections = {"dog": found((0, 0, 9, 9, 0.8), (0, 0, 9, 9, 0.9), (5, 0, 14, 9, 0.7), (30, 30, 40, 40, 0.6))}
    assert len(select_objects(detections, 0.3)["dog"]) == 4
    suppressed = select_objects(detections, 0.3, max_overlap=0.5)["dog"]
    assert [o.score for o in suppressed] == [0.9, 0.7, 0.6]  # the duplicate box goes, the 1/3 overlap stays


def test_box_iou_counts_end_pixels():
    assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == pytest.approx(1.0)
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0


def test_selection_keeps_masks_and_drops_empty_classes():
    masks = np.zeros((2, 64, 64), dtype=bool)
    masks[1, :4, :4] = True
    objects = select_objects({"cat": found((0, 0, 9, 9, 0.5), (0, 0, 4, 4, 0.8), masks=masks),
                              "dog": found((0, 0, 9, 9, 0.1))}, 0.3)
    assert list(objects) == ["cat"]
    assert [o.score for o in objects["cat"]] == [0.8, 0.5]
    np.testing.assert_array_equal(objects["cat"][0].mask, masks[1])
    assert objects["cat"][1].mask.sum() == 0


# ------------------------------------------------------------------------------------------------ counting


@pytest.mark.parametrize("n, correct, reason", [
    (1, False, "expected clock>=2, found 1"),
    (2, True, ""),
    (3, False, "expected clock<3, found 3"),
    (0, False, "expected clock>=2, found 0"),
])
def test_counting_is_exact_through_include_and_exclude(n, correct, reason):
    metadata = meta("counting", {"class": "clock", "count": 2}, exclude=[{"class": "clock", "count": 3}])
    assert judge(IMAGE, {"clock": spread(n, 0.95)}, metadata, NoColors())[:2] == (correct, reason)


def test_counting_ignores_detections_below_its_threshold():
    detections = {"clock": found((0, 0, 8, 8, 0.95), (20, 0, 28, 8, 0.96), (40, 0, 48, 8, 0.9))}
    metadata = meta("counting", {"class": "clock", "count": 2}, exclude=[{"class": "clock", "count": 3}])
    assert judge(IMAGE, detections, metadata, NoColors())[:2] == (True, "")


# ------------------------------------------------------------------------------------- single and two objects


def test_single_object_wants_at_least_one():
    metadata = meta("single_object", {"class": "bench", "count": 1})
    assert judge(IMAGE, {"bench": spread(3, 0.5)}, metadata, NoColors())[:2] == (True, "")
    assert judge(IMAGE, {"cow": spread(1, 0.99)}, metadata, NoColors())[:2] == (False, "expected bench>=1, found 0")


def test_two_object_needs_both_and_reports_each_missing():
    metadata = meta("two_object", {"class": "cat", "count": 1}, {"class": "dog", "count": 1})
    assert judge(IMAGE, {"cat": spread(1, 0.5), "dog": spread(1, 0.5)}, metadata, NoColors())[:2] == (True, "")
    assert judge(IMAGE, {"cat": spread(1, 0.5)}, metadata, NoColors())[:2] == (False, "expected dog>=1, found 0")
    assert judge(IMAGE, {}, metadata, NoColors())[:2] == (False, "expected cat>=1, found 0\nexpected dog>=1, found 0")


# ------------------------------------------------------------------------------------------------- colours


def test_colour_is_judged_on_the_most_confident_objects_only():
    detections = {"car": found((0, 0, 8, 8, 0.4), (10, 0, 18, 8, 0.8), (20, 0, 28, 8, 0.6))}
    stub = StubColors(car=["red", "blue", "blue"])
    metadata = meta("colors", {"class": "car", "count": 1, "color": "red"})
    assert judge(IMAGE, detections, metadata, stub)[:2] == (True, "")
    assert stub.calls == [("car", 1)]
    correct, reason, _ = judge(IMAGE, detections, metadata, StubColors(car=["blue"]))
    assert not correct and reason == "expected red car>=1, found 0 red; and 1 blue"


def test_colour_reason_lists_seen_colours_in_the_official_order():
    detections = {"vase": spread(3, 0.5)}
    stub = StubColors(vase=["white", "red", "white"])
    correct, reason, _ = judge(IMAGE, detections, meta("colors", {"class": "vase", "count": 3, "color": "white"}), stub)
    assert not correct
    assert reason == "expected white vase>=3, found 2 white; and 1 red, 2 white"


def test_color_attr_checks_each_object_with_its_own_colour():
    metadata = meta("color_attr", {"class": "wine glass", "count": 1, "color": "purple"},
                    {"class": "apple", "count": 1, "color": "black"})
    detections = {"wine glass": spread(1, 0.5), "apple": spread(1, 0.5)}
    right = StubColors(**{"wine glass": ["purple"], "apple": ["black"]})
    assert judge(IMAGE, detections, metadata, right)[:2] == (True, "")
    correct, reason, _ = judge(IMAGE, detections, metadata, StubColors(**{"wine glass": ["purple"], "apple": ["red"]}))
    assert not correct and reason == "expected black apple>=1, found 0 black; and 1 red"


def test_object_crop_masks_the_background_grey_and_crops_the_rounded_box():
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 5:10] = True
    crop = np.asarray(object_crop(image, DetectedObject(np.array([4.4, 4.6, 10.5, 12.0]), 0.9, mask)))
    assert crop.shape == (7, 6, 3)  # x 4..10 (10.5 rounds to even), y 5..12
    assert (crop[0:5, 1:6] == 200).all() and (crop[5:, :] == 153).all() and (crop[:, 0] == 153).all()
    unmasked = np.asarray(object_crop(image, DetectedObject(np.array([0, 0, 3, 2]), 0.9, None)))
    assert unmasked.shape == (2, 3, 3) and (unmasked == 200).all()
    with pytest.raises(ValueError, match="mask"):
        object_crop(image, DetectedObject(np.array([0, 0, 3, 2]), 0.9, np.ones((5, 5), dtype=bool)))


# ------------------------------------------------------------------------------------------------ position


@pytest.mark.parametrize("dx, dy, relations", [
    (4.01, 0, ("right of",)), (3.99, 0, ()), (-4.01, 0, ("left of",)), (-3.99, 0, ()),  # horizontal edge: 2 * 0.1 * 20
    (0, 4.01, ("below",)), (0, -4.01, ("above",)), (0, 3.99, ()),
    (2.5, 0, ()),  # beyond the 0.1 margin, yet the shrunk offset is under half of the offset
    (30, -30, ("right of", "above")), (0, 0, ()),
])
def test_relative_position_at_the_threshold(dx, dy, relations):
    base = np.array([20.0, 20.0, 30.0, 30.0])
    moved = base + np.array([dx, dy, dx, dy])
    assert relative_position(moved, base) == relations


def test_relative_position_margin_grows_with_object_sizes():
    assert relative_position((0, 0, 10, 10), (3, 0, 13, 10)) == ()  # centres 3 px apart, 10 px wide: too close
    assert relative_position((0, 0, 2, 2), (3, 0, 5, 2)) == ("left of",)  # 3 px apart, 2 px wide: left


def test_position_prompt_relates_each_object_to_its_target():
    metadata = meta("position", {"class": "teddy bear", "count": 1},
                    {"class": "dog", "count": 1, "position": ["right of", 0]})
    left, right = (0, 20, 20, 40, 0.8), (40, 20, 60, 40, 0.8)
    assert judge(IMAGE, {"teddy bear": found(left), "dog": found(right)}, metadata, NoColors())[:2] == (True, "")
    correct, reason, _ = judge(IMAGE, {"teddy bear": found(right), "dog": found(left)}, metadata, NoColors())
    assert not correct and reason == "expected dog right of target, found left of target"
    correct, reason, _ = judge(IMAGE, {"dog": found(right)}, metadata, NoColors())
    assert not correct and reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"


def test_position_uses_only_the_most_confident_object_of_each_clause():
    metadata = meta("position", {"class": "kite", "count": 1},
                    {"class": "wine glass", "count": 1, "position": ["above", 0]})
    kite = found((20, 40, 40, 60, 0.9), (20, 0, 40, 10, 0.5))  # a weaker kite high up does not matter
    glass = found((20, 10, 40, 25, 0.7), (20, 50, 40, 64, 0.4))
    assert judge(IMAGE, {"kite": kite, "wine glass": glass}, metadata, NoColors())[:2] == (True, "")


# ------------------------------------------------------------------------------------------------- summary


def test_summary_is_the_mean_over_tags_not_over_images():
    tags = ["single_object"] * 4 + ["two_object"] * 2 + ["counting", "colors", "position", "color_attr"]
    correct = [1, 1, 1, 1, 0, 1, 0, 1, 1, 0]
    result = summarize(tags, correct)
    expected = {"single_object": 1.0, "two_object": 0.5, "counting": 0.0, "colors": 1.0, "position": 1.0,
                "color_attr": 0.0}
    for tag, value in expected.items():
        assert result[tag] == pytest.approx(value)
    assert result["overall"] == pytest.approx(3.5 / 6)
    assert result["overall"] != pytest.approx(np.mean(correct))


def test_summary_leaves_out_unscored_images_and_a_missing_tag_makes_overall_nan():
    result = summarize(["counting", "counting", "colors"], [1.0, float("nan"), 0.0])
    assert result["counting"] == pytest.approx(1.0) and result["colors"] == pytest.approx(0.0)
    assert math.isnan(result["position"]) and math.isnan(result["overall"])
    with pytest.raises(ValueError, match="tags"):
        summarize(["counting", "colour"], [1, 0])
    with pytest.raises(ValueError, match="2 tags for 1"):
        summarize(["counting", "colors"], [1])


# ------------------------------------------------------------------------------------------ shipped metadata


def test_shipped_metadata_loads_with_six_tags_and_coco_classes():
    rows = load_metadata()
    assert len(rows) == 553
    assert tuple(dict.fromkeys(r["tag"] for r in rows)) == TAGS
    names = object_names()
    assert len(names) == 80 and names[0] == "person" and names[-1] == "toothbrush"
    assert {c["class"] for r in rows for c in r["include"] + r.get("exclude", [])} <= set(names)
    assert {c["color"] for r in rows for c in r["include"] if "color" in c} <= set(COLORS)


def test_detector_labels_map_coco_spellings_to_geneval_names():
    assert detector_class_names({0: "person", 64: "mouse", 65: "remote", 66: "keyboard"}) == {
        0: "person", 64: "computer mouse", 65: "tv remote", 66: "computer keyboard"}
    with pytest.raises(ValueError, match="LABEL_0"):
        detector_class_names({0: "LABEL_0"})


def test_masks_to_boxes_is_tight_with_exclusive_ends():
    masks = np.zeros((2, 10, 12), dtype=bool)
    masks[0, 2:5, 3:9] = True
    np.testing.assert_array_equal(masks_to_boxes(masks), [[3, 2, 9, 5], [0, 0, 0, 0]])


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def metric():
    detector, processor = tiny_mask2former(seed=0)
    return GenEvalScore(detector, processor, *tiny_clip(seed=0), batch_size=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)


PROMPTS = ["a photo of a cow", "a photo of two clocks", "not a GenEval prompt", "a photo of a blue fire hydrant",
           "a photo of a dog right of a teddy bear"]


def test_metric_scores_zero_or_one_and_nan_for_unknown_prompts(metric, images):
    scores = metric.score(PROMPTS, images)
    assert scores.dtype == np.float64 and scores.shape == (5,)
    assert math.isnan(scores[2]) and metric.last_reasons[2] is None
    assert set(np.delete(scores, 2).tolist()) <= {0.0, 1.0}
    assert all(isinstance(r, str) for i, r in enumerate(metric.last_reasons) if i != 2)


def test_metric_finds_a_class_the_detector_is_sure_of(images):
    detector, processor = tiny_mask2former(seed=1)
    cow = detector.config.label2id["cow"]
    with torch.no_grad():  # every query says "cow" with near certainty
        detector.class_predictor.bias.fill_(-20.0)
        detector.class_predictor.bias[cow] = 20.0
    metric = GenEvalScore(detector, processor, *tiny_clip(seed=1))
    verdicts = metric.details(["a photo of a cow", "a photo of a bench", "a photo of a cow"], list(images[:2]) + [
        Image.fromarray(images[2])])
    assert [v["correct"] for v in verdicts] == [True, False, True]
    assert verdicts[1]["reason"] == "expected bench>=1, found 0"
    rows = verdicts[0]["details"]["cow"]
    assert 1 <= len(rows) <= 16 and all(r[4] > 0.3 for r in rows)
    assert all(0 <= r[0] < r[2] <= 48 and 0 <= r[1] < r[3] <= 48 for r in rows)
    # the colour clause asks CLIP about the best cow's crop: its answer scores 1, any other colour 0
    best = metric.detect(list(images[:1]))[0]["cow"]
    top = int(np.argmax(best.scores))
    crop_of = DetectedObject(best.boxes[top], best.scores[top], best.masks[top])
    seen = metric.classify_colors(images[0], [crop_of], "cow")[0]
    other = next(c for c in COLORS if c != seen)
    rows = [meta("colors", {"class": "cow", "count": 1, "color": c}) for c in (seen, other)]
    assert metric.score(["p", "p"], np.stack([images[0]] * 2), metadata=rows).tolist() == [1.0, 0.0]
    assert metric.last_reasons[1] == f"expected {other} cow>=1, found 0 {other}; and 1 {seen}"


def test_metric_detections_agree_across_batch_shapes(metric, images, tmp_path):
    together = metric.detect(list(images[:3]))
    alone = metric.detect([images[1]])
    assert together[1].keys() == alone[0].keys()
    for name in alone[0]:
        np.testing.assert_allclose(together[1][name].scores, alone[0][name].scores, atol=1e-4)
    path = tmp_path / "image.png"
    Image.fromarray(images[0]).save(path)
    np.testing.assert_array_equal(metric.score(PROMPTS[:1], [path]), metric.score(PROMPTS[:1], images[:1]))


def test_metric_metadata_overrides_the_prompt_lookup(metric, images):
    rows = [{"tag": "single_object", "include": [{"class": "cat", "count": 0}], "prompt": "x"}, None]
    scores = metric.score(["anything", "a photo of a cow"], images[:2], metadata=rows)
    assert scores[0] == 1.0 and math.isnan(scores[1])  # zero cats are always there; no row, no score
    with pytest.raises(ValueError, match="1 metadata rows for 2 images"):
        metric.score(["a", "b"], images[:2], metadata=rows[:1])


def test_metric_refuses_mismatched_batches(metric, images):
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        metric.score(PROMPTS[:3], images[:2])


def test_from_pretrained_names_the_metric_and_the_id(tmp_path):
    missing = str(tmp_path / "no-detector")
    with pytest.raises(MetricLoadError, match=r"geneval: cannot load .*no-detector"):
        GenEvalScore.from_pretrained(detector_id=missing, clip_id=str(tmp_path / "no-clip"))


# ---------------------------------------------------------------------------------------------- official scale


def test_official_instances_follow_mmdets_post_processing():
    # 3 queries, 2 classes + no-object. Query 0: class 1 at p = 0.8, its mask positive everywhere it is valid
    # (the bottom quarter of the input is padding, negative); query 1: class 0 at p = 0.9 but an empty mask;
    # query 2: p <= 0.3 for both classes (never kept).
    probabilities = torch.tensor([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]], dtype=torch.float64)
    masks = torch.full((3, 4, 4), -2.0)
    masks[0, :3] = 2.0
    labels, scores, binary = official_instances(probabilities.log(), masks, input_size=(16, 16),
                                                resized_size=(12, 16), image_size=(24, 32))
    assert labels.tolist() == [1] and binary.shape == (1, 24, 32)
    assert binary.all(), "the padded rows are cropped before the mask is resized to the image"
    # score = class probability x the mean sigmoid over the mask; rows next to the padding interpolate lower
    inside = torch.sigmoid(torch.tensor(2.0)).item()
    assert 0.8 * torch.sigmoid(torch.tensor(0.5)).item() < scores[0] < 0.8 * inside
    masks[0] = 2.0  # positive everywhere: the score is exact
    _, scores, _ = official_instances(probabilities.log(), masks, (16, 16), (12, 16), (24, 32))
    assert scores.tolist() == pytest.approx([0.8 * inside], abs=1e-6)
    assert official_instances(probabilities.log(), masks, (16, 16), (12, 16), (24, 32), min_score=0.85)[0].size == 0


def test_the_detector_sees_a_384_px_image_at_mmdets_800_px(tmp_path):
    detector, processor = tiny_mask2former(seed=0)
    with torch.no_grad():  # every query says "cow" with near certainty, so instances come back
        detector.class_predictor.bias.fill_(-20.0)
        detector.class_predictor.bias[detector.config.label2id["cow"]] = 20.0
    processor.size = {"shortest_edge": 384, "longest_edge": 384}  # as the hub checkpoint's processor ships
    detector.save_pretrained(tmp_path / "detector")
    processor.save_pretrained(tmp_path / "detector")
    clip, clip_processor = tiny_clip(seed=0)
    clip.save_pretrained(tmp_path / "clip")
    clip_processor.save_pretrained(tmp_path / "clip")
    metric = GenEvalScore.from_pretrained(str(tmp_path / "detector"), str(tmp_path / "clip"))
    seen = []
    metric.detector.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape),
                                              with_kwargs=True)
    image = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    found = metric.detect([image])[0]
    assert [tuple(shape) for shape in seen] == [(1, 3, 800, 800)]
    assert list(found) == ["cow"] and found["cow"].masks.shape[1:] == (384, 384)
