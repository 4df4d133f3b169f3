"""The demo's held-out layout measures: the world's placement rules and the box statistics no reward computes."""

import json
import math

import numpy as np
import pytest

from gotr1.chain import Box, Chain, ChainObject
from gotr1.demo.heldout import (BAND, IOU_TOLERANCE, LayoutMeasures, data_measures, data_range, layout_measures,
                                within_data_range)
from gotr1.demo.synthetic import SIDES, Placement, synthetic_samples

GRID = Placement(4)


@pytest.mark.parametrize("grid", [4, None])
def test_every_sample_follows_its_placement_unless_the_data_contradicts_it(grid):
    place = Placement(grid)
    for sample in synthetic_samples(400, seed=5, grid=grid):
        assert place.follows(sample.side, [o.box for o in sample.objects]), sample
    contradicted = [s for s in synthetic_samples(400, seed=5, grid=grid, relation_noise=1.0) if s.side != "row"]
    assert contradicted and not any(place.follows(s.side, [o.box for o in s.objects]) for s in contradicted)


@pytest.mark.parametrize("side, boxes, expected", [
    ("left", [Box(0, 0, 500, 1000), Box(500, 250, 1000, 750)], True),
    ("left", [Box(0, 0, 750, 1000), Box(750, 0, 1000, 1000)], False),     # the first box crosses the middle
    ("left", [Box(0, 0, 500, 1000), Box(500, 0, 1000, 1000), Box(0, 0, 250, 250)], False),  # three objects
    ("top", [Box(0, 0, 1000, 500), Box(250, 500, 750, 1000)], True),
    ("top", [Box(0, 0, 500, 500), Box(250, 500, 750, 1000)], False),      # under, but wider than the first
    ("bottom", [Box(0, 500, 1000, 1000), Box(0, 0, 500, 250)], True),
    ("next_to", [Box(0, 250, 500, 750), Box(500, 250, 750, 750)], True),
    ("next_to", [Box(0, 250, 500, 750), Box(500, 0, 750, 750)], False),   # not on the same rows
    ("row", [Box(0, 0, 250, 1000), Box(250, 0, 750, 500), Box(750, 0, 1000, 1000)], True),
    ("row", [Box(0, 0, 500, 1000), Box(250, 0, 750, 500)], False),        # columns overlap
    ("row", [Box(0, 0, 300, 1000), Box(500, 0, 750, 500)], False),        # 300 is off the 4-cell grid
    ("row", [Box(0, 0, 0, 1000)], False),                                 # an empty box
])
def test_placement_rules_on_hand_made_boxes(side, boxes, expected):
    assert GRID.follows(side, boxes) is expected


def test_an_unknown_side_is_refused_by_name():
    with pytest.raises(ValueError, match=r"side must be one of .*'diagonal'"):
        GRID.follows("diagonal", [Box(0, 0, 250, 250)])
    assert set(SIDES) >= {s.side for s in synthetic_samples(200, seed=1, grid=4)}


def test_measures_of_hand_made_chains():
    sample = next(s for s in synthetic_samples(50, seed=2, grid=4) if s.side == "left")
    first, second = (o.name for o in sample.objects)
    placed = Chain("", [ChainObject(first, Box(0, 0, 500, 500)), ChainObject(second, Box(500, 0, 1000, 1000))])
    stacked = Chain("", [ChainObject(first, Box(0, 0, 1000, 1000)), ChainObject(second, Box(0, 500, 1000, 1000))])
    renamed = Chain("", [ChainObject(second, Box(0, 0, 500, 500)), ChainObject(first, Box(500, 0, 1000, 1000))])
    empty = Chain("no objects")
    measures = layout_measures([sample] * 4, [placed, stacked, renamed, empty], GRID)
    # areas: (0.25 + 0.5) / 2, (1 + 0.5) / 2, 0.375; IoU: 0, 0.5, 0; placement: only the first of four
    assert measures.box_area == pytest.approx((0.375 + 0.75 + 0.375) / 3)
    assert measures.pairwise_iou == pytest.approx(0.5 / 3)
    assert measures.placement == pytest.approx(0.25)
    with pytest.raises(ValueError, match="chains has 1 entries for 4 samples"):
        layout_measures([sample] * 4, [placed], GRID)


def test_data_range_and_json_form():
    samples = synthetic_samples(300, seed=0, grid=4)
    data, typical = data_measures(samples, GRID), data_range(samples)
    assert data.pairwise_iou == 0.0 and data.placement == 1.0 and 0.1 < data.box_area < 0.4
    areas = sorted(np.mean([o.box.area for o in s.objects]) / 1e6 for s in samples)
    assert BAND == (0.05, 0.95) and typical.box_area == pytest.approx(tuple(np.quantile(areas, BAND)))
    assert typical.box_area[0] < data.box_area < typical.box_area[1] and typical.pairwise_iou == (0.0, 0.0)
    inside = LayoutMeasures(typical.box_area[1] - 1e-3, IOU_TOLERANCE - 1e-3, 0.5)
    assert within_data_range(inside, typical) == {"box_area": True, "pairwise_iou": True}
    grown = LayoutMeasures(typical.box_area[1] + 1e-3, IOU_TOLERANCE + 1e-3, 0.5)
    assert within_data_range(grown, typical) == {"box_area": False, "pairwise_iou": False}
    shrunk = LayoutMeasures(typical.box_area[0] - 1e-3, 0.0, 0.5)
    assert within_data_range(shrunk, typical)["box_area"] is False
    nothing = LayoutMeasures(math.nan, math.nan, 0.0)
    assert nothing.as_dict() == {"box_area": None, "pairwise_iou": None, "placement": 0.0}
    assert within_data_range(nothing, typical) == {"box_area": False, "pairwise_iou": False}
    assert json.loads(json.dumps(typical.as_dict())) == {"box_area": list(typical.box_area), "pairwise_iou": [0.0, 0.0]}
