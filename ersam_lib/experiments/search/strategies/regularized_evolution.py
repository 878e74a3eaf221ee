"""Real et al.'s aging (regularized) evolution: the tournament winner's mutant joins, the oldest leaves (chapter 5)."""

from __future__ import annotations

import random
from collections import deque

from .base import Run, fill, mutant

__all__ = ["run"]


def run(run: Run, seed: int) -> None:
    """Real et al.'s aging evolution: the tournament winner's mutant joins, the oldest member leaves."""
    rng, b = random.Random(seed), run.budget
    pop = deque(fill(run, rng, b.population))
    while not run.done and pop:
        winner = max(rng.sample(list(pop), min(b.tournament, len(pop))), key=run.fitness)
        row = run.propose(mutant(run.space, winner["_arch"], rng, b.mutate_prob))
        if row is not None:
            pop.append(row)
            pop.popleft()

