"""ERSAM's search as Once-for-All runs it: a population, the top-k parents, mutants and crossovers (chapter 5)."""

from __future__ import annotations

import random
from typing import Any

from .base import Run, fill

__all__ = ["run"]


def run(run: Run, seed: int) -> None:
    """ERSAM's search as Once-for-All runs it: keep the top-k, refill with mutants and crossovers of them."""
    rng, b, space = random.Random(seed), run.budget, run.space
    pop = fill(run, rng, b.population)
    n_children = b.population - b.parents
    n_mutants = round(n_children * b.mutate_share)
    while not run.done:
        parents = sorted(pop, key=run.fitness, reverse=True)[:b.parents]  # stable: ties keep evaluation order
        children: list[dict[str, Any]] = []
        while len(children) < n_children and not run.done:
            if len(children) < n_mutants or len(parents) < 2:
                child = space.mutate(rng.choice(parents)["_arch"], rng, b.mutate_prob)
            else:
                a, c = rng.sample(parents, 2)
                child = space.crossover(a["_arch"], c["_arch"], rng)
            row = run.propose(child)
            if row is not None:
                children.append(row)
        pop = parents + children

