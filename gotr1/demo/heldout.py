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

BAND = (0.05, 0.95)
"""The quantiles of the data's per-chain measures that bound its range: the central 90% of its chains."""
IOU_TOLERANCE = 0.02
"""A stage's mean pairwise IoU may exceed the top of the data's band by this much (the data's objects never
overlap; T2I-CompBench calls two boxes the same place from IoU 0.1)."""


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
    placed = [_follows(sample, chain, place) for sample, chain in zip(samples, chains)]
    return LayoutMeasures(box_area=_mean(_chain_areas(chains)), pairwise_iou=_mean(_chain_ious(chains)),
                          placement=_mean(placed))


@dataclass(frozen=True)
class DataRange:
    """The SFT data's range: the band of :data:`BAND` quantiles of its per-chain measures (``(low, high)``).

    The central 90% of the data's chains rather than its extremes, so that a few odd chains of the data do not
    widen the range: a stage's mean lies in it when its chains are, on average, chains the data could hold.
    """

    box_area: tuple[float, float]
    pairwise_iou: tuple[float, float]

    def as_dict(self) -> dict[str, list[float]]:
        """The bounds for JSON, as ``[low, high]`` lists."""
        return {name: list(bounds) for name, bounds in asdict(self).items()}


def data_measures(samples: list[SyntheticSample], place: Placement) -> LayoutMeasures:
    """:class:`LayoutMeasures` of the samples' own chains (the SFT data)."""
    return layout_measures(samples, _data_chains(samples), place)


def data_range(samples: list[SyntheticSample]) -> DataRange:
    """:class:`DataRange` of the samples' own chains (the SFT data)."""
    chains = _data_chains(samples)
    return DataRange(box_area=_band(_chain_areas(chains)), pairwise_iou=_band(_chain_ious(chains)))


def within_data_range(stage: LayoutMeasures, data: DataRange) -> dict[str, bool]:
    """Whether a stage's mean box area lies in the data's band and its mean pairwise IoU at most
    :data:`IOU_TOLERANCE` above the band's top (False for a measure without chains)."""
    low, high = data.box_area
    return {"box_area": bool(low <= stage.box_area <= high),
            "pairwise_iou": bool(stage.pairwise_iou <= data.pairwise_iou[1] + IOU_TOLERANCE)}


def _data_chains(samples: list[SyntheticSample]) -> list[Chain]:
    return [Chain(s.chain, list(s.objects)) for s in samples]


def _chain_areas(chains: list[Chain]) -> list[float]:
    """Each chain's mean box area as a share of the canvas (chains with objects)."""
    return [np.mean([o.box.area for o in c.objects]) / COORD_MAX**2 for c in chains if c.objects]


def _chain_ious(chains: list[Chain]) -> list[float]:
    """Each chain's mean IoU over its object pairs (chains with two or more objects)."""
    return [_mean_pairwise_iou(c) for c in chains if len(c.objects) >= 2]


def _follows(sample: SyntheticSample, chain: Chain, place: Placement) -> bool:
    names = [o.name for o in chain.objects]
    if names != [o.name for o in sample.objects]:
        return False
    return place.follows(sample.side, [o.box for o in chain.objects])


def _mean_pairwise_iou(chain: Chain) -> float:
    boxes = chain.boxes.astype(np.float64)
    upper = np.triu_indices(len(boxes), k=1)
    return float(box_iou(boxes[:, None], boxes[None, :])[upper].mean())


def _band(values) -> tuple[float, float]:
    low, high = np.quantile(values, BAND)
    return float(low), float(high)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
