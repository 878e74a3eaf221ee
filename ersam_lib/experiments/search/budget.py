"""How much a search may evaluate, its hard budget and its strategies' settings (chapter 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...core.scales import sizes
from .reward import Reward

__all__ = ["SearchBudget"]


@dataclass(frozen=True)
class SearchBudget:
    """How much a search may evaluate, the hard constraint, and the strategies' settings (chapter 5).

    - ``n_evals``: distinct architectures scored per run; ``max_proposals``: proposals allowed per evaluation
      before a run gives up (rejections and repeats included);
    - ``max_energy_mj`` / ``max_latency_ms``: the hard budget (ERSAM); ``None`` = unconstrained;
    - ``reward``: what ``regularized_evolution``, ``tpe`` and ``gp`` maximise (and the ``reward`` column);
      ``fitness`` overrides the single-objective strategies' target (``"acc"`` or ``"reward"``; ``None``: ERSAM's
      evolution maximises accuracy under the budget, the others the reward);
    - ``population``: ERSAM's and aging evolution's population, NSGA-II's generation size; ``parents``: ERSAM's
      top-k; ``mutate_share``: ERSAM's share of children made by mutation (the rest by crossover);
      ``mutate_prob``: per-choice resampling probability; ``tournament``: aging evolution's sample size;
      ``n_startup``: random trials before Optuna's TPE/GP model takes over.
    """

    n_evals: int = 100
    max_energy_mj: float | None = None
    max_latency_ms: float | None = None
    reward: Reward = Reward()
    fitness: str | None = None
    population: int = 20
    parents: int = 5
    mutate_share: float = 0.5
    mutate_prob: float = 0.1
    tournament: int = 5
    n_startup: int = 10
    max_proposals: int = 50

    def __post_init__(self) -> None:
        for name in ("n_evals", "population", "parents", "tournament", "n_startup", "max_proposals"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SearchBudget.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.parents > self.population:
            raise ValueError(f"parents ({self.parents}) cannot exceed population ({self.population})")
        if not 0.0 <= self.mutate_share <= 1.0 or not 0.0 < self.mutate_prob <= 1.0:
            raise ValueError(f"mutate_share must be in [0, 1] and mutate_prob in (0, 1], got "
                             f"{self.mutate_share}, {self.mutate_prob}")
        for name in ("max_energy_mj", "max_latency_ms"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"SearchBudget.{name} must be positive or None, got {v!r}")
        if self.fitness not in (None, "acc", "reward"):
            raise ValueError(f"fitness must be None, 'acc' or 'reward', got {self.fitness!r}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> SearchBudget:
        """``smoke``: 6 evaluations per run; ``tutorial``: 30 per run (chapter 5 runs each strategy for three seeds,
        so about 400 supernet scores in all, minutes on a CPU); ``paper``: 1000 with Once-for-All's and Real et
        al.'s population sizes."""
        return cls(**(sizes("search", scale) | overrides))

    def allows(self, costs: Mapping[str, float]) -> bool:
        """True when ``costs`` satisfy the hard budget."""
        return ((self.max_energy_mj is None or costs["energy_mj"] <= self.max_energy_mj)
                and (self.max_latency_ms is None or costs["latency_ms"] <= self.max_latency_ms))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchBudget:
        return cls(**(dict(d) | {"reward": Reward(**d.get("reward", {}))}))

