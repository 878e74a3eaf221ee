"""The search strategies of chapter 5, one module each, behind one interface (``run(run, seed)``) and one registry.

=========================  ==================================================================================
``random``                 nothing: uniform samples of the space (the control)
``evolution``              ERSAM / Once-for-All: population, top-k parents, mutation + crossover; accuracy
``regularized_evolution``  Real et al. (2019) aging evolution: tournament, mutate the winner, drop the oldest;
                           Speckhard's reward
``tpe``                    Optuna's TPESampler (Bayesian, tree-structured Parzen estimator); the reward
``gp``                     Optuna's GPSampler (Bayesian, Gaussian process, as Speckhard's Vizier); the reward;
                           a GP fit per proposal: seconds each on a CPU, so keep ``n_evals`` in the hundreds
``nsga2``                  Optuna's NSGAIISampler on (error, energy): the whole frontier
=========================  ==================================================================================

Adding a strategy = one module with a ``run(run: Run, seed: int)`` and one :data:`STRATEGIES` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ....models.space import SearchSpace
from ..budget import SearchBudget
from ..history import History
from ..objectives import Objectives
from . import evolution, optuna_samplers, random_search, regularized_evolution
from .base import Run

__all__ = ["STRATEGIES", "Strategy", "fitness_of", "search"]


@dataclass(frozen=True)
class Strategy:
    """A search strategy: its loop over a :class:`Run`, and what it maximises by default (``"acc"`` or
    ``"reward"``; ``None``: no single fitness, as random search and NSGA-II's front)."""

    run: Callable[[Run, int], None]
    fitness: str | None


STRATEGIES: dict[str, Strategy] = {
    "random": Strategy(random_search.run, None),
    "evolution": Strategy(evolution.run, "acc"),
    "regularized_evolution": Strategy(regularized_evolution.run, "reward"),
    "tpe": Strategy(optuna_samplers.run, "reward"),
    "gp": Strategy(optuna_samplers.run, "reward"),
    "nsga2": Strategy(optuna_samplers.run, None),
}


def fitness_of(budget: SearchBudget, strategy: str) -> str | None:
    """What ``strategy`` maximises under ``budget``: the budget's ``fitness`` when it sets one and the strategy has
    a single objective, else the strategy's own (``None`` for random search and NSGA-II)."""
    own = STRATEGIES[strategy].fitness
    return (budget.fitness or own) if own is not None else None


def search(space: SearchSpace, objectives: Objectives, budget: SearchBudget, strategy: str = "evolution",
           seed: int = 0) -> History:
    """Run one search strategy for one seed (chapter 5); the same seed gives the same history.

    Every returned architecture is in ``space`` and within the hard budget; see :mod:`ersam_lib.experiments.search` for
    how evaluations are counted.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    run = Run(space, objectives, budget, strategy, seed, fitness_of(budget, strategy))
    with optuna_samplers.quiet_optuna():
        STRATEGIES[strategy].run(run, seed)
    return run.history()
