"""GoT-R1's total reward from its four components, and the configuration that weighs them.

The paper multiplies (Sec. 3.3): ``R = R_PI * ((R_sem + R_spa) / 2) * R_RI``, optionally times an
aesthetic score, and reports that a sum did worse. Both forms are here so ablations can compare them.
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
    the weighted mean ``sum_c(w_c * R_c) / sum_c(w_c)``. Either way R stays in [0, 1] and a NaN component
    (not applicable) makes R NaN. A component whose weight is 0 is neither requested nor used.
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


def combine(sem=None, spa=None, ri=None, pi=None, aes=None, config: RewardConfig | None = None) -> np.ndarray:
    """The total reward of each sample.

    Parameters
    ----------
    sem, spa, ri, pi, aes : array-like float ``[N]`` in [0, 1], or None
        R_sem, R_spa, R_RI, R_PI and the aesthetic score; each component with a positive weight in
        ``config`` must be given, the others are ignored. NaN marks "not applicable" and propagates.
    config : RewardConfig, optional
        Weights and mode; the default is the paper's product.

    Returns
    -------
    np.ndarray float32 ``[N]``
    """
    config = config or RewardConfig()
    given = {"sem": sem, "spa": spa, "ri": ri, "pi": pi, "aes": aes}
    values = {}
    for name in config.active:
        if given[name] is None:
            raise ValueError(f"combine: {name} is None but RewardConfig.w_{name} = {config.weight(name)} > 0")
        values[name] = np.asarray(given[name], dtype=np.float64).reshape(-1)
    sizes = {v.shape[0] for v in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"combine: components have different lengths {({k: v.shape[0] for k, v in values.items()})}")
    if config.mode == "sum":
        total = sum(config.weight(c) * v for c, v in values.items()) / sum(config.weight(c) for c in values)
        return total.astype(np.float32)
    total = np.ones(sizes.pop())
    reasoning_weight = config.w_sem + config.w_spa
    if reasoning_weight > 0:
        reasoning = sum(config.weight(c) * values[c] for c in ("sem", "spa") if c in values)
        total = total * reasoning / reasoning_weight
    for name in ("ri", "pi", "aes"):
        if name in values:
            total = total * values[name] ** config.weight(name)
    return total.astype(np.float32)
