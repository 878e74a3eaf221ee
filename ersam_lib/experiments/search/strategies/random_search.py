"""Random search: uniform samples of the space, the control every strategy must beat (chapter 5)."""

from __future__ import annotations

import random

from .base import Run

__all__ = ["run"]


def run(run: Run, seed: int) -> None:
    rng = random.Random(seed)
    while not run.done:
        run.propose(run.space.sample(rng))

