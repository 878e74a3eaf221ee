"""What every search strategy shares (chapter 5): proposing, rejecting, counting, and the proposal cap."""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from typing import Any

from ....core.progress import progress
from ....models.space import Arch, SearchSpace
from ..budget import SearchBudget
from ..history import History
from ..objectives import Objectives

__all__ = ["Run", "fill", "mutant"]


class Run:
    """One run of one strategy: the bookkeeping every strategy shares (rejection, repeats, counting, the cap)."""

    def __init__(self, space: SearchSpace, objectives: Objectives, budget: SearchBudget, strategy: str, seed: int,
                 fitness: str | None = None):
        """``fitness``: the column a single-objective strategy maximises (``"acc"`` or ``"reward"``; ``None`` for a
        strategy without one: random search, NSGA-II)."""
        self.space, self.objectives, self.budget, self.strategy, self.seed = space, objectives, budget, strategy, seed
        self.fitness_key = fitness
        self.rows: list[dict[str, Any]] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.counts = {"proposals": 0, "forbidden": 0, "over_budget": 0, "repeats": 0}
        self.bar = progress(total=budget.n_evals, desc=f"{strategy} (seed {seed})", leave=False)

    @property
    def capped(self) -> bool:
        return self.counts["proposals"] >= self.budget.max_proposals * self.budget.n_evals

    @property
    def done(self) -> bool:
        return len(self.rows) >= self.budget.n_evals or self.capped

    def propose(self, arch: Arch) -> dict[str, Any] | None:
        """The evaluation row of ``arch``, or ``None`` when the rule forbids it or it breaks the hard budget."""
        self.counts["proposals"] += 1
        if not self.space.contains(arch):
            self.counts["forbidden"] += 1
            return None
        costs = self.objectives.cost(arch)
        if not self.budget.allows(costs):
            self.counts["over_budget"] += 1
            return None
        if arch.arch_id in self.seen:
            self.counts["repeats"] += 1
            return self.seen[arch.arch_id]
        scores = self.objectives.accuracy(arch)
        reward = self.budget.reward(scores["acc"], costs["energy_mj"], costs["memory_kb"])
        row = {"strategy": self.strategy, "seed": self.seed, "eval": len(self.rows),
               "proposal": self.counts["proposals"] - 1, "arch_id": arch.arch_id, "arch": arch.to_json(),
               "acc": scores["acc"], "mae": scores["mae"], "error": 1.0 - scores["acc"], "reward": reward,
               "feasible": True, **{k: v for k, v in costs.items() if k not in ("acc", "mae")},
               "_arch": arch}
        self.rows.append(row)
        self.seen[arch.arch_id] = row
        self.bar.update(1)
        return row

    def fitness(self, row: Mapping[str, Any]) -> float:
        return float(row[self.fitness_key or "reward"])

    def history(self) -> History:
        self.bar.close()
        stopped = "n_evals" if len(self.rows) >= self.budget.n_evals else "max_proposals"
        if stopped == "max_proposals":
            warnings.warn(f"{self.strategy} (seed {self.seed}) stopped after {len(self.rows)} of "
                          f"{self.budget.n_evals} evaluations: {self.counts['proposals']} proposals found no more "
                          f"new architectures within the budget", RuntimeWarning, stacklevel=3)
        meta = {"strategy": self.strategy, "seed": self.seed, "budget": self.budget.to_dict(),
                "fitness": self.fitness_key,
                "stopped": stopped, **self.counts}
        return History.from_records([{k: v for k, v in r.items() if k != "_arch"} for r in self.rows], meta)


def fill(run: Run, rng: random.Random, size: int) -> list[dict[str, Any]]:
    """A random initial population of ``size`` evaluated, feasible rows."""
    pop: list[dict[str, Any]] = []
    while len(pop) < size and not run.done:
        row = run.propose(run.space.sample(rng))
        if row is not None:
            pop.append(row)
    return pop


def mutant(space: SearchSpace, arch: Arch, rng: random.Random, prob: float, tries: int = 100) -> Arch:
    """A mutation that changes something (Real et al. always modify the parent)."""
    child = arch
    for _ in range(tries):
        child = space.mutate(arch, rng, prob)
        if child != arch:
            break
    return child

