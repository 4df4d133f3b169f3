"""Offline rule rewards on hand-built good and bad layouts and images."""

import numpy as np
import pytest

from gotr1.chain import Box, ChainObject, format_chain
from gotr1.rewards import ColorRuleReward, LayoutRuleReward, read_prompt, relation_holds
from gotr1.rewards.rules import PALETTE


def chain(*objects):
    """A chain text from (name, (x1, y1, x2, y2)) pairs."""
    return format_chain([ChainObject(name, Box(*box)) for name, box in objects])


LEFT, RIGHT = (50, 300, 400, 700), (600, 300, 950, 700)
TOP, BOTTOM = (300, 50, 700, 400), (300, 600, 700, 950)


@pytest.mark.parametrize("prompt, good, bad", [
    ("a horse on the right of a man", [("horse", RIGHT), ("man", LEFT)], [("horse", LEFT), ("man", RIGHT)]),
    ("The fluffy cat is on the left of the soft pillow.", [("fluffy cat", LEFT), ("pillow", RIGHT)],
     [("fluffy cat", RIGHT), ("pillow", LEFT)]),
    ("a balloon on the top of a giraffe", [("balloon", (400, 50, 600, 300)), ("giraffe", (300, 350, 700, 950))],
     [("balloon", (400, 700, 600, 950)), ("giraffe", (300, 50, 700, 600))]),
    ("a lamp above a desk", [("lamp", TOP), ("desk", BOTTOM)], [("lamp", BOTTOM), ("desk", TOP)]),
    ("a dog below a shelf", [("dog", BOTTOM), ("shelf", TOP)], [("dog", TOP), ("shelf", BOTTOM)]),
    ("a rabbit next to a balloon", [("rabbit", (100, 400, 450, 800)), ("balloon", (500, 350, 850, 800))],
     [("rabbit", (0, 0, 200, 200)), ("balloon", (800, 800, 1000, 1000))]),
])
def test_layout_rule_scores_good_layouts_one_and_bad_layouts_lower(prompt, good, bad):
    reward = LayoutRuleReward()
    scores, details = reward([prompt, prompt], [chain(*good), chain(*bad)], None, None)
    assert scores.dtype == np.float32 and scores.shape == (2,)
    assert scores[0] == 1.0
    assert scores[1] == pytest.approx(2 / 3)  # both objects named, the relation broken
    assert details["checks"] == [(3, 3), (2, 3)]


def test_layout_rule_missing_objects_empty_chains_and_prompts_without_objects():
    reward = LayoutRuleReward()
    prompts = ["a horse on the right of a man", "a horse on the right of a man", "a green bench and a blue bowl", "!!"]
    chains = [chain(("horse", RIGHT)), "a horse and a man, no boxes", chain(("green bench", LEFT), ("blue bowls", RIGHT)), "x"]
    scores, _ = reward(prompts, chains, None, None)
    assert scores[0] == pytest.approx(1 / 3)  # the man is missing, so the relation cannot hold
    assert scores[1] == 0.0  # a chain without objects
    assert scores[2] == 1.0  # plural chain names match singular prompt nouns
    recoloured, _ = reward(["a green bench and a blue bowl"], [chain(("gray bench", LEFT), ("blue bowls", RIGHT))], None, None)
    # an object named with another colour than the prompt asks is not the object: the bowl alone is named, and
    # one object cannot be two distinct ones
    assert recoloured[0] == pytest.approx(1 / 3)
    assert np.isnan(scores[3])  # nothing to check: not applicable


def test_a_number_word_asks_for_exactly_that_many_objects():
    reward = LayoutRuleReward(strict=True)
    three = [chain(("red triangle", (0, 0, 250, 500)), ("red triangle", (250, 0, 500, 500)), ("red triangle", (500, 0, 750, 500)))]
    one = [chain(("red triangle", (0, 0, 1000, 1000)))]
    four = [chain(*[("red triangle", (x, 0, x + 200, 500)) for x in (0, 200, 400, 600)])]
    scores = [float(reward(["three red triangles"], c, None, None)[0][0]) for c in (three, one, four)]
    assert scores == [1.0, 0.0, 0.0]  # one big triangle (or four) does not answer "three" (GenEval's counting)
    assert float(reward(["red triangles"], one, None, None)[0][0]) == 1.0  # no number word: at least one
    phrases, _ = read_prompt("two blue circles and a red square")
    assert [(p.head, p.count) for p in phrases] == [("circle", 2), ("square", None)]


def test_objects_the_prompt_asks_for_must_occupy_distinct_places():
    reward = LayoutRuleReward(strict=True)
    apart = chain(("red square", (0, 0, 500, 500)), ("blue circle", (500, 0, 1000, 500)))
    stacked = chain(("red square", (0, 0, 500, 500)), ("blue circle", (0, 0, 500, 500)))
    scores, details = reward(["a red square and a blue circle"] * 2, [apart, stacked], None, None)
    assert scores.tolist() == [1.0, 0.0] and details["checks"] == [(3, 3), (2, 3)]
    piled = chain(*[("red triangle", (0, 0, 500, 500))] * 3)  # three named, one place: GenEval would count one
    assert float(reward(["three red triangles"], [piled], None, None)[0][0]) == 0.0


def test_strict_layout_rule_gives_credit_only_when_every_check_passes():
    prompts = ["a lamp above a desk"] * 3 + ["a horse on the right of a man", "!!"]
    chains = [chain(("lamp", TOP), ("desk", BOTTOM)), chain(("lamp", BOTTOM), ("desk", TOP)), "no boxes",
              chain(("horse", RIGHT)), "x"]
    strict, details = LayoutRuleReward(strict=True)(prompts, chains, None, None)
    assert strict[:4].tolist() == [1.0, 0.0, 0.0, 0.0] and np.isnan(strict[4])
    assert details["checks"][:2] == [(3, 3), (2, 3)]  # the partial counts are still reported


def test_unknown_relation_kind_is_refused():
    with pytest.raises(ValueError, match="unknown relation kind 'inside'"):
        relation_holds("inside", LEFT, RIGHT)


def test_relation_geometry():
    assert relation_holds("left", LEFT, RIGHT) and not relation_holds("left", RIGHT, LEFT)
    assert relation_holds("above", TOP, BOTTOM) and relation_holds("below", BOTTOM, TOP)
    assert not relation_holds("on_top", (0, 0, 100, 100), (500, 500, 900, 900))  # above-left, no overlap
    assert relation_holds("next_to", (0, 0, 100, 100), (140, 20, 240, 120))
    assert not relation_holds("next_to", (0, 0, 100, 100), (400, 0, 500, 100))  # too far
    assert not relation_holds("next_to", (0, 0, 100, 100), (0, 0, 100, 100))  # same place


@pytest.mark.parametrize("kind, a, b", [
    ("above", (0, 0, 1000, 1000), (0, 500, 1000, 1000)),    # a page-sized box "above" the lower half: IoU 0.5
    ("on_top", (0, 0, 1000, 1000), (0, 500, 1000, 1000)),
    ("left", (0, 0, 600, 1000), (250, 0, 1000, 1000)),      # centres 300 < 625, but IoU 0.35
    ("below", (0, 400, 1000, 1000), (0, 0, 1000, 700)),
    ("next_to", (0, 0, 500, 500), (300, 0, 800, 500)),      # IoU 0.25: one place, not two
])
def test_overlapping_boxes_hold_no_relation(kind, a, b):
    """T2I-CompBench's threshold for distinct objects (IoU < 0.1) applies to every relation: the centres
    alone would pass each of these."""
    assert not relation_holds(kind, a, b)


def test_relations_hold_up_to_the_distinct_object_threshold():
    a, b = (0, 0, 500, 1000), (450, 0, 1000, 1000)   # IoU 50/1000 = 0.05 < 0.1: still two places
    assert relation_holds("left", a, b) and relation_holds("next_to", a, b)
    c = (0, 0, 500, 1000), (400, 0, 1000, 1000)      # IoU 100/1000 = 0.1: not below the threshold
    assert not relation_holds("left", *c)


def test_read_prompt_on_compbench_styles():
    phrases, relations = read_prompt("a giraffe next to a lamp")
    assert [p.head for p in phrases] == ["giraffe", "lamp"]
    assert [(r.subject.head, r.kind, r.object.head) for r in relations] == [("giraffe", "next_to", "lamp")]
    phrases, relations = read_prompt("a green bench and a blue bowl")
    assert [(p.head, p.colors) for p in phrases] == [("bench", ("green",)), ("bowl", ("blue",))] and not relations
    _, relations = read_prompt("The red hat was on top of the brown coat rack.")
    assert [(r.subject.head, r.kind, r.object.head) for r in relations] == [("hat", "on_top", "rack")]


def paint(boxes_colors, size=64):
    image = np.full((size, size, 3), 255, np.uint8)
    for (x1, y1, x2, y2), color in boxes_colors:
        s = size / 1000
        image[round(y1 * s):round(y2 * s), round(x1 * s):round(x2 * s)] = PALETTE[color]
    return image


def test_color_rule_scores_requested_colours_inside_chain_boxes():
    reward = ColorRuleReward(target_share=0.5)
    prompts = ["a green bench and a blue bowl"] * 3 + ["a dog"]
    chains = [chain(("bench", LEFT), ("bowl", RIGHT))] * 3 + [chain(("dog", LEFT))]
    good = paint([(LEFT, "green"), (RIGHT, "blue")])
    swapped = paint([(LEFT, "blue"), (RIGHT, "green")])
    half = paint([((50, 300, 225, 700), "green"), (RIGHT, "blue")])  # the bench fills half its box
    scores, details = reward(prompts, chains, [good, swapped, half, good], None)
    assert scores[0] == 1.0 and scores[1] == 0.0
    assert scores[2] == pytest.approx(1.0, abs=0.05)  # half the box at target_share 0.5 is full marks
    assert np.isnan(scores[3])  # no colour requested
    assert details["object_share"][0] == [1.0, 1.0]
    # Only the prompt requests colours: a chain renaming its object after the painted colour gains nothing
    # (the reward-hacking route GRPO found in the demo). An array batch works.
    scores, _ = ColorRuleReward(target_share=1.0)(["x"], [chain(("red apple", LEFT))],
                                                  paint([(LEFT, "red")])[None], None)
    assert np.isnan(scores[0])
    scores, _ = ColorRuleReward(target_share=1.0)(["a blue apple"], [chain(("red apple", LEFT))],
                                                  paint([(LEFT, "red")])[None], None)
    assert scores[0] == 0.0
    scores, _ = ColorRuleReward(target_share=1.0)(["a red apple"], [chain(("apple", LEFT))],
                                                  paint([(LEFT, "red")])[None], None)
    assert scores[0] == 1.0
    assert np.isnan(reward(prompts, chains, None, None)[0]).all()
    assert reward(["a red cube"], ["a red cube"], [good], None)[0][0] == 0.0  # no objects
    # Two objects with one noun: each chain object answers the phrase whose colour it names.
    same_noun = ["an orange circle next to a purple circle"] * 2
    named = [chain(("orange circle", LEFT), ("purple circle", RIGHT)), chain(("orange circle", LEFT), ("purple circle", RIGHT))]
    scores, _ = reward(same_noun, named, [paint([(LEFT, "orange"), (RIGHT, "purple")]), paint([(LEFT, "purple"), (RIGHT, "orange")])], None)
    assert scores.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="target_share"):
        ColorRuleReward(target_share=0)
