"""Reward components into one total: gotr1's only combiner, with its only NaN rule.

The paper multiplies (Sec. 3.3): ``R = R_PI * ((R_sem + R_spa) / 2) * R_RI``, optionally times an
aesthetic score, and reports that a sum did worse. Both forms are here so ablations can compare them.
:func:`combine_scores` combines any named components (rule rewards, judge rewards) and owns the NaN rule:
a NaN score means the component does not apply to that sample (no colour asked, no image decoded), so
it is left out, as TRL does with rewards that return None; a sample to which no component applies gets
NaN, which the advantage kernel turns into advantage 0. A *failed* judge request is never NaN: it
scores 0 (see :mod:`gotr1.rewards.mllm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPONENTS = ("sem", "spa", "ri", "pi", "aes")


@dataclass
class RewardConfig:
    """How the reward components combine, and which ones the judge is asked for.

    ``product`` (the paper): ``R = R_PI**w_pi * (w_sem * R_sem + w_spa * R_spa) / (w_sem + w_spa) * R_RI**w_ri
    * R_aes**w_aes``; with the default weights, ``R_PI * (R_sem + R_spa) / 2 * R_RI``. ``sum`` (ablations):
    the weighted mean ``sum_c(w_c * R_c) / sum_c(w_c)``. Either way R stays in [0, 1]; a NaN component (not
    applicable) is left out (:func:`combine_scores`). A component whose weight is 0 is neither requested nor used.
    """

    # --- weights -----------------------------------------------------------------------------
    w_sem: float = 1.0
    """Coefficient of R_sem inside the reasoning term (product) or of the mean (sum)."""
    w_spa: float = 1.0
    """Coefficient of R_spa inside the reasoning term (product) or of the mean (sum)."""
    w_ri: float = 1.0
    """Exponent of R_RI (product) or its coefficient (sum)."""
    w_pi: float = 1.0
    """Exponent of R_PI (product) or its coefficient (sum)."""
    w_aes: float = 0.0
    """Exponent or coefficient of the optional aesthetic score (0: not used, the paper's default)."""

    # --- combination -------------------------------------------------------------------------
    mode: str = "product"
    """``"product"`` (GoT-R1) or ``"sum"`` (the ablation the paper reports as worse)."""

    # --- rendering ---------------------------------------------------------------------------
    layout_size: int = 384
    """Side in pixels of the canvas R_spa draws the chain's boxes on (the judge sees it at this size)."""

    def __post_init__(self):
        for name in ("w_sem", "w_spa", "w_ri", "w_pi", "w_aes"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"RewardConfig.{name} must be a finite weight >= 0, got {value}")
        if self.mode not in ("product", "sum"):
            raise ValueError(f"RewardConfig.mode must be 'product' or 'sum', got {self.mode!r}")
        if not any(self.weight(c) > 0 for c in COMPONENTS):
            raise ValueError("RewardConfig: every weight is 0; set at least one of w_sem, w_spa, w_ri, w_pi, w_aes > 0")
        if self.layout_size <= 0:
            raise ValueError(f"RewardConfig.layout_size must be positive, got {self.layout_size}")

    def weight(self, component: str) -> float:
        """The weight of ``component`` (one of ``COMPONENTS``)."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown reward component {component!r}; expected one of {COMPONENTS}")
        return getattr(self, f"w_{component}")

    @property
    def active(self) -> tuple[str, ...]:
        """The components with a positive weight, i.e. those the judge is asked for."""
        return tuple(c for c in COMPONENTS if self.weight(c) > 0)


def nan_stat(values, stat=np.nanmean) -> float:
    """``stat`` (e.g. ``np.nanmean``, ``np.nanstd``) over the scores that exist; NaN when none does."""
    values = np.asarray(values, dtype=np.float64)
    return float(stat(values)) if np.isfinite(values).any() else float("nan")


def combine_scores(scores: dict, mode: str = "product", weights: dict | None = None,
                   averaged: tuple[str, ...] = ()) -> np.ndarray:
    """The total reward of each sample from named component scores in [0, 1].

    Parameters
    ----------
    scores : dict[str, array-like float [N]]
        Component name -> scores; NaN: the component does not apply to that sample (left out).
    mode : {"product", "sum"}
        ``product``: the weighted mean of the ``averaged`` components times every other component raised to
        its weight. ``sum``: the weighted mean of all components.
    weights : dict[str, float], optional
        Per-component weight (default 1).
    averaged : tuple of str
        Components that enter a product as one weighted mean (GoT-R1's ``(R_sem + R_spa) / 2``).

    Returns
    -------
    np.ndarray float32 ``[N]``: NaN where no component applies.
    """
    if mode not in ("product", "sum"):
        raise ValueError(f"mode must be 'product' or 'sum', got {mode!r}")
    if not scores:
        raise ValueError("combine_scores: no components to combine")
    names = list(scores)
    columns = [np.asarray(scores[n], dtype=np.float64).reshape(-1) for n in names]
    if len({c.shape[0] for c in columns}) != 1:
        raise ValueError(f"combine_scores: components have different lengths {({n: c.shape[0] for n, c in zip(names, columns)})}")
    stack = np.stack(columns)
    weight = np.array([(weights or {}).get(n, 1.0) for n in names], dtype=np.float64)[:, None]
    applies = ~np.isnan(stack)

    def weighted_mean(rows: list[int]) -> np.ndarray:
        w = np.where(applies[rows], weight[rows], 0.0)
        total_weight = w.sum(0)
        summed = (w * np.where(applies[rows], stack[rows], 0.0)).sum(0)
        return np.where(total_weight > 0, summed / np.where(total_weight > 0, total_weight, 1.0), np.nan)

    if mode == "sum":
        total = weighted_mean(list(range(len(names))))
    else:
        mean_rows = [i for i, n in enumerate(names) if n in averaged]
        total = np.ones(stack.shape[1])
        if mean_rows:
            mean = weighted_mean(mean_rows)
            total *= np.where(np.isnan(mean), 1.0, mean)
        for i in (i for i in range(len(names)) if i not in mean_rows):
            total *= np.where(applies[i], np.where(applies[i], stack[i], 1.0) ** weight[i], 1.0)
    return np.where(applies.any(0), total, np.nan).astype(np.float32)


def combine(sem=None, spa=None, ri=None, pi=None, aes=None, config: RewardConfig | None = None) -> np.ndarray:
    """GoT-R1's total reward of each sample (:func:`combine_scores` over the judge's components).

    Parameters
    ----------
    sem, spa, ri, pi, aes : array-like float ``[N]`` in [0, 1], or None
        R_sem, R_spa, R_RI, R_PI and the aesthetic score; each component with a positive weight in
        ``config`` must be given, the others are ignored. NaN marks "not applicable" and is left out.
    config : RewardConfig, optional
        Weights and mode; the default is the paper's product.

    Returns
    -------
    np.ndarray float32 ``[N]``
    """
    config = config or RewardConfig()
    given = {"sem": sem, "spa": spa, "ri": ri, "pi": pi, "aes": aes}
    for name in config.active:
        if given[name] is None:
            raise ValueError(f"combine: {name} is None but RewardConfig.w_{name} = {config.weight(name)} > 0")
    values = {name: given[name] for name in config.active}
    try:
        return combine_scores(values, config.mode, {c: config.weight(c) for c in values}, averaged=("sem", "spa"))
    except ValueError as err:
        raise ValueError(str(err).replace("combine_scores", "combine")) from None
