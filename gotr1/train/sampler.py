"""The order in which a trainer draws its rows or prompts: seeded epochs, resumable exactly."""

from __future__ import annotations

import numpy as np


class EpochSampler:
    """Indices ``0..n-1`` in a fresh seeded permutation each epoch, drawn in order.

    Its whole state is ``(epoch, cursor)``, saved in checkpoints, so a resumed run draws exactly the
    indices the interrupted one would have drawn.
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, cursor: int = 0):
        if n < 1:
            raise ValueError(f"cannot sample from an empty set (n={n})")
        self.n, self.seed, self.epoch, self.cursor = n, seed, epoch, cursor

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices, running into the next epoch's permutation when this one ends."""
        out = []
        while len(out) < count:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            chunk = order[self.cursor : self.cursor + count - len(out)]
            out += [int(i) for i in chunk]
            self.cursor += len(chunk)
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}
