"""Reward-hacking guard rails: per-component trend alarms over the training log.

A policy that games one reward model shows a tell-tale pattern: that component climbs while the others
(the judge, a held-out monitor) stall or fall. :class:`RewardTrends` compares each component's mean over
the last ``window`` steps with the ``window`` before, and raises an alarm for a component that rose by more
than ``delta`` while another fell by more than ``delta``. Alarms are logged (``reward_alarms``) and warned
once when they start; they never stop a run.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict


class RewardTrends:
    """Moving-window trends of each reward component; see the module docstring."""

    def __init__(self, window: int = 20, delta: float = 0.05):
        self.window, self.delta = window, delta
        self.history: dict[str, list[float]] = defaultdict(list)
        self.active: set[str] = set()

    def _change(self, values: list[float]) -> float:
        recent, before = values[-self.window :], values[-2 * self.window : -self.window]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return mean(recent) - mean(before)

    def update(self, means: dict[str, float]) -> list[str]:
        """Record one step's component means; return the alarms that hold now."""
        if self.window <= 0:
            return []
        for name, value in means.items():
            if value is not None and math.isfinite(value):
                self.history[name].append(float(value))
        changes = {name: self._change(v) for name, v in self.history.items() if len(v) >= 2 * self.window}
        falling = sorted(name for name, change in changes.items() if change < -self.delta)
        alarms = []
        for name, change in sorted(changes.items()):
            others = [f for f in falling if f != name]
            if change > self.delta and others:
                alarms.append(f"{name} rose {change:+.3f} over the last {self.window} steps while "
                              f"{', '.join(f'{o} ({changes[o]:+.3f})' for o in others)} fell: check for reward hacking")
        started = {a.split(" ", 1)[0] for a in alarms} - self.active
        for alarm in alarms:
            if alarm.split(" ", 1)[0] in started:
                warnings.warn(alarm, stacklevel=2)
        self.active = {a.split(" ", 1)[0] for a in alarms}
        return alarms
