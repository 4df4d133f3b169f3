"""Held-out measures of the demo's chains that no reward computes: how big the boxes are, how much a
chain's boxes overlap, and whether they sit where the synthetic world puts objects.

GRPO optimises the layout rule; these check that a gain is not won by leaving the data's distribution
(boxes stretched to half the canvas, objects stacked on one another). Each stage is set beside the SFT
data's own values, and :func:`within_data_range` is the demo's test of a gain's honesty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gotr1.chain import COORD_MAX, Chain, box_iou
from gotr1.demo.synthetic import Placement, SyntheticSample

AREA_TOLERANCE = 0.25
"""A stage's mean box area may differ from the data's by this share of it (the hacked chains that motivated
these checks had boxes two to four times the data's)."""
IOU_TOLERANCE = 0.02
"""A stage's mean pairwise IoU may exceed the data's by this much (the data's objects never overlap)."""


@dataclass(frozen=True)
class LayoutMeasures:
    """Means over chains: box area (share of the canvas), IoU of a chain's object pairs, the world's placement.

    Attributes
    ----------
    box_area : float
        Mean over chains with objects of the mean box area, as a share of the canvas (NaN without any).
    pairwise_iou : float
        Mean over chains with two or more objects of the mean IoU of their object pairs (NaN without any).
    placement : float
        Share of all chains that name the truth's objects in order and put their boxes where the synthetic
        world places objects for the prompt (:meth:`Placement.follows`), mistakes of the data not excepted.
    """

    box_area: float
    pairwise_iou: float
    placement: float

    def as_dict(self) -> dict[str, float | None]:
        """The measures for JSON: None where a measure had no chain to measure (NaN is not JSON)."""
        return {name: None if np.isnan(value) else value for name, value in asdict(self).items()}


def layout_measures(samples: list[SyntheticSample], chains: list[Chain], place: Placement) -> LayoutMeasures:
    """:class:`LayoutMeasures` of ``chains``, chain ``i`` answering the prompt of ``samples[i]``."""
    if len(samples) != len(chains):
        raise ValueError(f"chains has {len(chains)} entries for {len(samples)} samples")
    areas = [np.mean([o.box.area for o in c.objects]) / COORD_MAX**2 for c in chains if c.objects]
    ious = [_mean_pairwise_iou(c) for c in chains if len(c.objects) >= 2]
    placed = [_follows(sample, chain, place) for sample, chain in zip(samples, chains)]
    return LayoutMeasures(box_area=_mean(areas), pairwise_iou=_mean(ious), placement=_mean(placed))


def data_measures(samples: list[SyntheticSample], place: Placement) -> LayoutMeasures:
    """:class:`LayoutMeasures` of the samples' own chains (the SFT data)."""
    return layout_measures(samples, [Chain(s.chain, list(s.objects)) for s in samples], place)


def within_data_range(stage: LayoutMeasures, data: LayoutMeasures) -> dict[str, bool]:
    """Whether a stage's box area and pairwise IoU stay in the data's range (see the tolerances above)."""
    return {"box_area": abs(stage.box_area - data.box_area) <= AREA_TOLERANCE * data.box_area,
            "pairwise_iou": stage.pairwise_iou <= data.pairwise_iou + IOU_TOLERANCE}


def _follows(sample: SyntheticSample, chain: Chain, place: Placement) -> bool:
    names = [o.name for o in chain.objects]
    if names != [o.name for o in sample.objects]:
        return False
    return place.follows(sample.side, [o.box for o in chain.objects])


def _mean_pairwise_iou(chain: Chain) -> float:
    boxes = chain.boxes.astype(np.float64)
    upper = np.triu_indices(len(boxes), k=1)
    return float(box_iou(boxes[:, None], boxes[None, :])[upper].mean())


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
