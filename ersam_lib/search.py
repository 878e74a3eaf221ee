"""Chapter 5: searching the trained supernet under energy budgets, and comparing search strategies honestly.

Three parts, as in Archai (objectives cached by architecture, a kept history, the Pareto frontier):

- :class:`Objectives` scores one architecture: an *expensive* accuracy function (in the book: the supernet's
  inherited accuracy after BN recalibration on the validation split, :func:`supernet_accuracy`) and a *cheap* cost
  function (chapter 2's cost model, :func:`predicted_costs`), each cached by ``arch.arch_id`` and optionally kept
  in a JSON file so that a re-run of the chapter reuses every evaluation;
- :func:`search` runs one strategy for one seed under a :class:`SearchBudget` and returns a :class:`History`;
- :func:`compare_strategies` runs several strategies over several seeds and tabulates the hypervolume of the
  (error, energy) front and the best reward against the number of evaluated architectures.

The strategies (``STRATEGIES``) and what each maximises:

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

Counting is the same for all: an *evaluation* is a distinct architecture whose accuracy was asked for within that
run (whether the cache already held it or not). An architecture the cost rule forbids or that breaks the hard
budget (``max_energy_mj``/``max_latency_ms``) is rejected from its cheap cost, never scored, never counted and
never returned; Optuna is told such a trial was pruned (GPSampler, which ignores pruned trials, is told the run's
worst fitness so far instead). A repeated proposal is answered from the run's own
results and not counted again. Each run stops after ``n_evals`` evaluations, or earlier, with the reason in
``History.meta["stopped"]``, when ``max_proposals x n_evals`` proposals yielded no more new feasible architectures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .complexity import count_params
from .costmodel import CostEstimate, CostModel, EnergyCalibration
from .devices import Device
from .data import load_feature_data, subset
from .io import atomic_path, atomic_write_json, read_json
from .pareto import hypervolume_curve, pareto_mask
from .progress import progress
from .rundir import require, run_file
from .scales import sizes
from .space import Arch, SearchSpace, StageArch, StageSpace, build_model
from .supernet import evaluate_arch, load_supernet

__all__ = [
    "STRATEGIES", "History", "Objectives", "Reward", "RunSearch", "SearchBudget", "arch_from_trial",
    "compare_strategies", "costs_from_estimate", "curves", "measure_finalists", "measured_costs", "predicted_costs",
    "reference_point", "run_search_setup", "run_strategies", "search", "summarize_curves", "supernet_accuracy",
    "synthetic_objectives",
]

STRATEGIES: tuple[str, ...] = ("random", "evolution", "regularized_evolution", "tpe", "gp", "nsga2")
_FITNESS = {"evolution": "acc", "regularized_evolution": "reward", "tpe": "reward", "gp": "reward"}
REQUIRED_COSTS: tuple[str, ...] = ("latency_ms", "energy_mj", "memory_kb")

AccuracyFn = Callable[[Arch], Mapping[str, float]]
CostFn = Callable[[Arch], Mapping[str, float]]


# --------------------------------------------------------------------------------------------- the reward
@dataclass(frozen=True)
class Reward:
    """Speckhard et al.'s reward ``R = ACC - b max(0, E - E0) - c max(0, M - M0)`` (chapter 5).

    Units: ``acc`` is a fraction in [0, 1] (0.02 = two accuracy points); ``energy_mj`` is the energy of one
    inference in mJ (here one 5-s segment); ``memory_kb`` is the model's static memory in kB (1 kB = 1000 bytes;
    Speckhard's TFLite file size, here the int8 weights). The defaults are the paper's, measured on a Pixel 4 XL:
    E0 = 1.25 mJ, b = 0.02 / 0.75 mJ (0.75 mJ more energy must buy two accuracy points), M0 = 60 kB,
    c = 0.02 / 30 kB (a 90 kB model needs two points more than a 60 kB one). :meth:`b_prime` is the milder energy
    slope b' = 0.02 / 1.75 mJ; :meth:`scaled` carries the same trade-off to another device's thresholds.
    """

    e0_mj: float = 1.25
    b_per_mj: float = 0.02 / 0.75
    m0_kb: float = 60.0
    c_per_kb: float = 0.02 / 30.0

    def __post_init__(self) -> None:
        for name in ("e0_mj", "b_per_mj", "m0_kb", "c_per_kb"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Reward.{name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def b_prime(cls, **overrides: float) -> Reward:
        """Speckhard's milder energy penalty b' = 0.02 / 1.75 mJ (their "-b'" searches)."""
        return cls(**({"b_per_mj": 0.02 / 1.75} | overrides))

    @classmethod
    def scaled(cls, e0_mj: float, m0_kb: float, harsh: bool = True) -> Reward:
        """The paper's trade-off relative to new thresholds: two points per 0.6 E0 (b; 1.4 E0 for b') above E0
        and per 0.5 M0 above M0. Use it when energies are not a phone's (the host's are tens of mJ)."""
        return cls(e0_mj, 0.02 / ((0.75 if harsh else 1.75) / 1.25 * e0_mj), m0_kb, 0.02 / (0.5 * m0_kb))

    def __call__(self, acc: Any, energy_mj: Any, memory_kb: Any) -> Any:
        """The reward; floats in, float out (arrays or pandas columns work elementwise)."""
        r = (acc - self.b_per_mj * np.maximum(0.0, np.subtract(energy_mj, self.e0_mj))
             - self.c_per_kb * np.maximum(0.0, np.subtract(memory_kb, self.m0_kb)))
        return float(r) if np.ndim(r) == 0 else r


# --------------------------------------------------------------------------------------------- objectives
def _floats(d: Mapping[str, Any], required: Sequence[str], what: str) -> dict[str, float]:
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"the {what} function must return {list(required)}; missing {missing} in {dict(d)!r}")
    return {str(k): float(v) for k, v in d.items() if isinstance(v, (int, float, np.number))}


class Objectives:
    """An accuracy function and a cost function of an architecture, each cached by ``arch.arch_id`` (chapter 5).

    ``accuracy_fn(arch) -> {"acc", "mae", ...}`` is the expensive one; ``cost_fn(arch) -> {"latency_ms",
    "energy_mj", "memory_kb", ...}`` the cheap one (floats; extra keys are kept, e.g. ``params``). ``counts`` holds
    the cache hits and misses. With ``cache_path`` the results are kept in that JSON file, rewritten atomically
    after every new accuracy, and read back on construction; ``tag`` names what the functions measure (supernet
    checkpoint, cost model, split): a cache file written under another tag is refused rather than silently reused.
    """

    def __init__(self, accuracy_fn: AccuracyFn, cost_fn: CostFn, cache_path: str | os.PathLike | None = None,
                 tag: str = ""):
        self.accuracy_fn, self.cost_fn, self.tag = accuracy_fn, cost_fn, tag
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.counts = {"acc_hits": 0, "acc_misses": 0, "cost_hits": 0, "cost_misses": 0}
        self._acc: dict[str, dict[str, float]] = {}
        self._cost: dict[str, dict[str, float]] = {}
        if self.cache_path is not None and self.cache_path.exists():
            self._load(self.cache_path)

    def _load(self, path: Path) -> None:
        doc = read_json(path)
        if not isinstance(doc, dict) or not {"tag", "accuracy", "cost"} <= set(doc):
            raise ValueError(f"{path} is not an objectives cache (want keys tag, accuracy, cost)")
        if doc["tag"] != self.tag:
            raise ValueError(f"{path} was written for tag {doc['tag']!r}, not {self.tag!r}: delete it or pass "
                             f"another cache_path")
        self._acc, self._cost = dict(doc["accuracy"]), dict(doc["cost"])

    def __len__(self) -> int:
        """Number of architectures whose accuracy is known."""
        return len(self._acc)

    def seconds_per_score(self) -> float:
        """Mean wall time of one accuracy evaluation, over every architecture scored (this run or a cached one)."""
        times = [v["eval_s"] for v in self._acc.values() if "eval_s" in v]
        return float(np.mean(times)) if times else float("nan")

    def cost(self, arch: Arch) -> dict[str, float]:
        """The cheap costs of ``arch`` (cached)."""
        key = arch.arch_id
        if key in self._cost:
            self.counts["cost_hits"] += 1
        else:
            self.counts["cost_misses"] += 1
            self._cost[key] = _floats(self.cost_fn(arch), REQUIRED_COSTS, "cost")
        return dict(self._cost[key])

    def accuracy(self, arch: Arch) -> dict[str, float]:
        """The expensive accuracy and MAE of ``arch`` (cached; a new one is written to ``cache_path``)."""
        key = arch.arch_id
        if key in self._acc:
            self.counts["acc_hits"] += 1
        else:
            self.counts["acc_misses"] += 1
            t0 = time.perf_counter()
            scores = _floats(self.accuracy_fn(arch), ("acc", "mae"), "accuracy")
            self._acc[key] = scores | {"eval_s": time.perf_counter() - t0}  # what one score cost, kept with it
            self.save()
        return dict(self._acc[key])

    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Costs and accuracy together (ask :meth:`cost` first when a budget may reject ``arch``)."""
        return self.cost(arch) | self.accuracy(arch)

    def save(self) -> Path | None:
        """Write the cache file now (no-op without ``cache_path``)."""
        if self.cache_path is None:
            return None
        return atomic_write_json(self.cache_path, {"tag": self.tag, "accuracy": self._acc, "cost": self._cost})


# --------------------------------------------------------------------------------------------- budget / config
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

    def fitness_of(self, strategy: str) -> str:
        """What a single-objective ``strategy`` maximises: ``"acc"`` or ``"reward"``."""
        return self.fitness or _FITNESS.get(strategy, "reward")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchBudget:
        return cls(**(dict(d) | {"reward": Reward(**d.get("reward", {}))}))


# --------------------------------------------------------------------------------------------- history
_ID_COLS = ["strategy", "seed", "eval", "proposal", "arch_id", "arch"]
_SCORE_COLS = ["acc", "mae", "error", "reward", "feasible"]


@dataclass
class History:
    """Every evaluation of one or more search runs, in order (chapter 5).

    ``df`` columns: strategy, seed, eval (0-based index among the run's evaluations), proposal (index among its
    proposals, rejected ones included), arch_id, arch (JSON, :meth:`Arch.from_json`), acc, mae, error = 1 - acc,
    reward, feasible (within the hard budget), then every cost the cost function returned. ``meta``: the strategy,
    seed, budget, counts of proposals / rejections / repeats, and why the run stopped.
    """

    df: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> History:
        df = pd.DataFrame(list(records))
        if df.empty:
            df = pd.DataFrame(columns=_ID_COLS + _SCORE_COLS + list(REQUIRED_COSTS))
        rest = [c for c in df.columns if c not in _ID_COLS + _SCORE_COLS]
        return cls(df[_ID_COLS + _SCORE_COLS + rest].reset_index(drop=True), dict(meta or {}))

    def __len__(self) -> int:
        return len(self.df)

    def archs(self) -> list[Arch]:
        """The evaluated architectures, in order."""
        return [Arch.from_json(s) for s in self.df["arch"]]

    def front(self, x: str = "energy_mj", y: str = "error") -> pd.DataFrame:
        """The Pareto-optimal rows of (``y``, ``x``), both minimised, one per point, sorted by ``x``."""
        if self.df.empty:
            return self.df.copy()
        d = self.df.drop_duplicates("arch_id")
        d = d[pareto_mask(d[[x, y]].to_numpy(dtype=float))]
        return d.drop_duplicates([x, y]).sort_values([x, y]).reset_index(drop=True)

    def best(self, reward: Reward | None = None, column: str = "reward") -> pd.Series:
        """The row with the highest reward (rescored under ``reward`` when given, e.g. ``Reward.b_prime()``), or
        the highest ``column`` (e.g. ``"acc"``)."""
        if self.df.empty:
            raise ValueError("the history is empty: nothing was evaluated")
        score = self._score(reward, column)
        return self.df.loc[score.idxmax()]

    def _score(self, reward: Reward | None, column: str) -> pd.Series:
        if reward is None:
            return self.df[column].astype(float)
        return pd.Series(reward(self.df["acc"].to_numpy(float), self.df["energy_mj"].to_numpy(float),
                                self.df["memory_kb"].to_numpy(float)), index=self.df.index)

    def hypervolume_curve(self, ref: Sequence[float], x: str = "energy_mj", y: str = "error") -> np.ndarray:
        """Hypervolume of the (``y``, ``x``) front after each evaluation, against ``ref`` = (y_ref, x_ref)."""
        return hypervolume_curve(self.df[[y, x]].to_numpy(dtype=float), ref)

    def best_reward_curve(self, reward: Reward | None = None) -> np.ndarray:
        """Best reward so far after each evaluation."""
        return np.maximum.accumulate(self._score(reward, "reward").to_numpy()) if len(self) else np.zeros(0)

    # ---- files
    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write ``.json`` (rows and meta) or ``.csv`` (rows only)."""
        path = Path(path)
        if path.suffix == ".json":
            return atomic_write_json(path, {"meta": self.meta, "columns": list(self.df.columns),
                                            "rows": self.df.to_dict(orient="records")})
        if path.suffix == ".csv":
            with atomic_path(path) as tmp:
                self.df.to_csv(tmp, index=False)
            return path
        raise ValueError(f"{path}: a history is saved as .json or .csv")

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        path = Path(path)
        if path.suffix == ".json":
            doc = read_json(path)
            if not isinstance(doc, dict) or "rows" not in doc:
                raise ValueError(f"{path} is not a search history (no 'rows')")
            h = cls.from_records(doc["rows"], doc.get("meta", {}))
            if "columns" in doc and set(doc["columns"]) == set(h.df.columns):
                h.df = h.df[doc["columns"]]  # the JSON writer sorts keys; keep the table's column order
            return h
        if path.suffix == ".csv":
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist")
            return cls.from_records(pd.read_csv(path).to_dict(orient="records"))
        raise ValueError(f"{path}: a history is read from .json or .csv")

    @classmethod
    def concat(cls, histories: Sequence[History]) -> History:
        """Several runs in one table (meta: the list of the runs' metas)."""
        frames = [h.df for h in histories if len(h)]
        df = pd.concat(frames, ignore_index=True) if frames else History.from_records([]).df
        return cls(df, {"runs": [h.meta for h in histories]})


# --------------------------------------------------------------------------------------------- one run
class _Run:
    """The bookkeeping shared by every strategy: rejection, repeats, counting, the proposal cap."""

    def __init__(self, space: SearchSpace, objectives: Objectives, budget: SearchBudget, strategy: str, seed: int):
        self.space, self.objectives, self.budget, self.strategy, self.seed = space, objectives, budget, strategy, seed
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
        return float(row[self.budget.fitness_of(self.strategy)])

    def history(self) -> History:
        self.bar.close()
        stopped = "n_evals" if len(self.rows) >= self.budget.n_evals else "max_proposals"
        if stopped == "max_proposals":
            warnings.warn(f"{self.strategy} (seed {self.seed}) stopped after {len(self.rows)} of "
                          f"{self.budget.n_evals} evaluations: {self.counts['proposals']} proposals found no more "
                          f"new architectures within the budget", RuntimeWarning, stacklevel=3)
        meta = {"strategy": self.strategy, "seed": self.seed, "budget": self.budget.to_dict(),
                "fitness": self.budget.fitness_of(self.strategy) if self.strategy in _FITNESS else None,
                "stopped": stopped, **self.counts}
        return History.from_records([{k: v for k, v in r.items() if k != "_arch"} for r in self.rows], meta)


def _fill(run: _Run, rng: random.Random, size: int) -> list[dict[str, Any]]:
    """A random initial population of ``size`` evaluated, feasible rows."""
    pop: list[dict[str, Any]] = []
    while len(pop) < size and not run.done:
        row = run.propose(run.space.sample(rng))
        if row is not None:
            pop.append(row)
    return pop


def _random(run: _Run, seed: int) -> None:
    rng = random.Random(seed)
    while not run.done:
        run.propose(run.space.sample(rng))


def _evolution(run: _Run, seed: int) -> None:
    """ERSAM's search as Once-for-All runs it: keep the top-k, refill with mutants and crossovers of them."""
    rng, b, space = random.Random(seed), run.budget, run.space
    pop = _fill(run, rng, b.population)
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


def _mutant(space: SearchSpace, arch: Arch, rng: random.Random, prob: float, tries: int = 100) -> Arch:
    """A mutation that changes something (Real et al. always modify the parent)."""
    child = arch
    for _ in range(tries):
        child = space.mutate(arch, rng, prob)
        if child != arch:
            break
    return child


def _regularized_evolution(run: _Run, seed: int) -> None:
    """Real et al.'s aging evolution: the tournament winner's mutant joins, the oldest member leaves."""
    rng, b = random.Random(seed), run.budget
    pop = deque(_fill(run, rng, b.population))
    while not run.done and pop:
        winner = max(rng.sample(list(pop), min(b.tournament, len(pop))), key=run.fitness)
        row = run.propose(_mutant(run.space, winner["_arch"], rng, b.mutate_prob))
        if row is not None:
            pop.append(row)
            pop.popleft()


# ---- Optuna: the space's choice lists as categorical parameters
def _stage_params(trial: Any, name: str, sp: StageSpace) -> StageArch:
    def pick(what: str, choices: tuple[int, ...]) -> int:
        return choices[0] if len(choices) == 1 else int(trial.suggest_categorical(f"{name}_{what}", list(choices)))

    return StageArch(pick("width", sp.widths), pick("kernel", sp.kernels), pick("stride", sp.strides),
                     pick("depth", sp.depths), pick("expand", sp.expands))


def arch_from_trial(trial: Any, space: SearchSpace) -> Arch:
    """The architecture an Optuna trial suggests: one categorical parameter per choice list with 2+ options
    (``stem_width``, ``enc0_width``, ``ctx1_expand``, ``mixer``, ...). It may be one the cost rule forbids."""
    stem = None if space.stem is None else _stage_params(trial, "stem", space.stem)
    enc = tuple(_stage_params(trial, f"enc{i}", sp) for i, sp in enumerate(space.encoder))
    ctx = tuple(_stage_params(trial, f"ctx{i}", sp) for i, sp in enumerate(space.context))
    mixers = list(space.mixers)
    mixer = mixers[0] if len(mixers) == 1 else str(trial.suggest_categorical("mixer", mixers))
    return Arch(enc, ctx, mixer, stem)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-feature warnings, restoring the caller's level."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _sampler(strategy: str, b: SearchBudget, seed: int) -> Any:
    import optuna

    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(2, b.population), seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=b.n_startup, multivariate=True)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=b.n_startup, deterministic_objective=True)


def _optuna(run: _Run, seed: int) -> None:
    import optuna
    from optuna.trial import TrialState

    multi = run.strategy == "nsga2"  # NSGA-II minimises (error, energy); TPE and GP maximise the fitness
    study = optuna.create_study(directions=["minimize", "minimize"] if multi else ["maximize"],
                                sampler=_sampler(run.strategy, run.budget, seed))
    while not run.done:
        trial = study.ask()
        row = run.propose(arch_from_trial(trial, run.space))
        if run.strategy == "gp":
            # GPSampler reads only complete trials: a pruned one teaches it nothing, and it proposed the same
            # infeasible region 1189 times in 1200 (smoke space, 1.5 mJ budget). A rejected trial is therefore
            # told the worst fitness of this run so far (it is still no evaluation). Optuna's constraint GPs
            # (trial.set_constraint) did no better here and doubled the time per proposal.
            worst = min((run.fitness(r) for r in run.rows), default=0.0)
            study.tell(trial, run.fitness(row) if row is not None else worst)
        elif row is None:
            study.tell(trial, state=TrialState.PRUNED)  # forbidden or over budget: not an evaluation
        else:
            study.tell(trial, (row["error"], row["energy_mj"]) if multi else run.fitness(row))


_STRATEGY_FNS: dict[str, Callable[[_Run, int], None]] = {
    "random": _random, "evolution": _evolution, "regularized_evolution": _regularized_evolution,
    "tpe": _optuna, "gp": _optuna, "nsga2": _optuna,
}


def search(space: SearchSpace, objectives: Objectives, budget: SearchBudget, strategy: str = "evolution",
           seed: int = 0) -> History:
    """Run one search strategy for one seed (chapter 5); the same seed gives the same history.

    Every returned architecture is in ``space`` and within the hard budget. See the module docstring for the
    strategies and how evaluations are counted.
    """
    if strategy not in _STRATEGY_FNS:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    run = _Run(space, objectives, budget, strategy, seed)
    with _quiet_optuna():
        _STRATEGY_FNS[strategy](run, seed)
    return run.history()


# --------------------------------------------------------------------------------------------- comparing
def reference_point(space: SearchSpace, objectives: Objectives, budget: SearchBudget) -> tuple[float, float]:
    """The (error, energy) reference for hypervolumes: error 1, and the hard energy budget or 1.1 x the energy
    of the space's largest architecture (one point shared by every strategy and seed, so areas compare)."""
    if budget.max_energy_mj is not None:
        return 1.0, float(budget.max_energy_mj)
    return 1.0, 1.1 * objectives.cost(space.largest())["energy_mj"]


def run_strategies(space: SearchSpace, objectives: Objectives, budget: SearchBudget, strategies: Sequence[str],
                   seeds: Sequence[int]) -> list[History]:
    """One :func:`search` per (strategy, seed), sharing ``objectives`` (and so its cache)."""
    return [search(space, objectives, budget, s, seed) for s in strategies for seed in seeds]


def curves(histories: Sequence[History], ref: Sequence[float], reward: Reward | None = None) -> pd.DataFrame:
    """Long table: strategy, seed, n_evals (1..), hypervolume and best reward so far, one row per evaluation."""
    parts = []
    for h in histories:
        if not len(h):
            continue
        parts.append(pd.DataFrame({
            "strategy": h.df["strategy"].to_numpy(), "seed": h.df["seed"].to_numpy(),
            "n_evals": np.arange(1, len(h) + 1), "hypervolume": h.hypervolume_curve(ref),
            "best_reward": h.best_reward_curve(reward)}))
    cols = ["strategy", "seed", "n_evals", "hypervolume", "best_reward"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def summarize_curves(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max over seeds of each curve, per strategy and number of evaluations.

    A run that stopped early contributes only up to its last evaluation (``n_seeds`` says how many did).
    """
    g = long.groupby(["strategy", "n_evals"], sort=False)
    out = g.agg(n_seeds=("seed", "nunique"),
                hv_mean=("hypervolume", "mean"), hv_std=("hypervolume", "std"),
                hv_min=("hypervolume", "min"), hv_max=("hypervolume", "max"),
                reward_mean=("best_reward", "mean"), reward_std=("best_reward", "std"),
                reward_min=("best_reward", "min"), reward_max=("best_reward", "max"))
    return out.reset_index()


def compare_strategies(space: SearchSpace, objectives: Objectives, budget: SearchBudget,
                       strategies: Sequence[str] = STRATEGIES, seeds: Sequence[int] = (0, 1, 2),
                       ref: Sequence[float] | None = None) -> pd.DataFrame:
    """Hypervolume of the (error, energy) front and best reward against evaluations, mean and spread over seeds,
    per strategy (chapter 5's comparison figure; :func:`ersam_lib.search_plots.plot_hypervolume`)."""
    ref = tuple(ref) if ref is not None else reference_point(space, objectives, budget)
    return summarize_curves(curves(run_strategies(space, objectives, budget, strategies, seeds), ref))


# --------------------------------------------------------------------------------------------- the book's functions
@dataclass
class RunSearch:
    """What chapter 5 searches in one run folder: the space and trained supernet of chapter 4, chapter 1's features,
    chapter 2's cost model with the energy calibration, and the cached objectives (:func:`run_search_setup`)."""

    space: SearchSpace
    supernet: Any
    data: Any
    cost_model: CostModel
    calibration: EnergyCalibration
    objectives: Objectives
    info: dict[str, Any]


def run_search_setup(run_dir: str | os.PathLike, runtime: str = "executorch", n_bn_batches: int = 8,
                     bn_batch_size: int = 128, reference: str = "mobilenetv2", reference_mj: float = 13.9,
                     cache: bool = True) -> RunSearch:
    """Chapter 5's objectives for a run: inherited accuracy after BN recalibration on ``n_bn_batches`` x
    ``bn_batch_size`` training mixtures (the same ones for every architecture) scored on the whole validation
    split; latency, memory and energy predicted by chapter 2's cost model of ``runtime`` (ExecuTorch, what chapter
    6 deploys; ``"eager"`` for PyTorch). The energy is calibrated so that the ``reference`` baseline, as chapter 2
    *measured* it on the same runtime (``profiling/backends.csv``, the minimum over repeats), costs
    ``reference_mj`` (:class:`~ersam_lib.costmodel.EnergyCalibration`; the device's own figure stays in
    ``energy_mj_device``). With ``cache`` the objectives live in ``RUN_DIR/search/objectives.json``, tagged with
    what they were computed from, so a re-run reuses every evaluation."""
    from torch.utils.data import DataLoader

    data = load_feature_data(run_dir)
    supernet, space, info = load_supernet(run_dir)
    cost_model = CostModel.load(run_dir, runtime=runtime)
    backends = pd.read_csv(require(run_dir, "backends"))
    ref = backends[(backends["model"] == reference) & (backends["backend"] == runtime)]
    if ref.empty:
        raise ValueError(f"{run_file(run_dir, 'backends')} has no {reference!r} row for {runtime!r}: chapter 2 "
                         f"measures the calibration reference; rerun it")
    calibration = EnergyCalibration.to_reference(float(ref["energy_mj"].iloc[0]), reference_mj)
    shape = (1, space.n_features, space.n_frames)
    # Materialise the BN batches and the validation split once: every architecture reads the same tensors.
    bn_ds = subset(data.train, n_bn_batches * bn_batch_size, seed=0)
    bn = [b for b in DataLoader(bn_ds, batch_size=bn_batch_size)]
    val = [b for b in DataLoader(data.val, batch_size=512)]

    def cost(arch: Arch) -> dict[str, float]:
        c = costs_from_estimate(cost_model.predict(_static_model(space, arch), shape))
        return c | {"energy_mj_device": c["energy_mj"], "energy_mj": calibration(c["energy_mj"])}

    correction = run_file(run_dir, "correction" if runtime == "eager" else f"correction_{runtime}")
    tag = (f"supernet={_file_digest(run_file(run_dir, 'supernet'))} runtime={runtime} "
           f"costmodel={_file_digest(correction)} calibration={calibration.scale:.6g} "
           f"bn={n_bn_batches}x{bn_batch_size}")
    path = run_file(run_dir, "objectives") if cache else None
    objectives = Objectives(lambda arch: evaluate_arch(supernet, arch, bn, val, n_bn_batches), cost, path, tag)
    return RunSearch(space, supernet, data, cost_model, calibration, objectives, info)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def supernet_accuracy(supernet: Any, bn_loader: Any, val_loader: Any, n_bn_batches: int = 20) -> AccuracyFn:
    """Accuracy function of chapter 5: the subnet's inherited weights, BN recalibrated on ``n_bn_batches`` of
    ``bn_loader`` (training data), scored on ``val_loader`` (the validation split): ``{"acc", "mae", "n"}``."""
    return lambda arch: evaluate_arch(supernet, arch, bn_loader, val_loader, n_bn_batches)


def _static_model(space: SearchSpace, arch: Arch) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):  # fresh weights must not move the caller's random stream
        return build_model(arch, space.n_features, space.n_classes, space.attn_dim)


def costs_from_estimate(est: CostEstimate) -> dict[str, float]:
    """Chapter 2's :class:`~ersam_lib.costmodel.CostEstimate` as the search's cost dict.

    Memory in kB (1000 bytes): ``memory_kb`` = int8 weights (one byte per parameter; the reward's M),
    ``memory_kb_float`` = float32 weights; ``peak_act_kb_float``/``_int8`` = the largest layer's input + output.
    Parameters include BatchNorm's, which an int8 export folds into the convolutions (a slight overestimate).
    """
    return {"latency_ms": est.latency_ms, "energy_mj": est.energy_mj, "params": float(est.params),
            "macs": float(est.macs), "memory_kb": est.params / 1000.0, "memory_kb_float": 4 * est.params / 1000.0,
            "peak_act_kb_float": est.peak_activation_bytes / 1000.0,
            "peak_act_kb_int8": est.peak_activation_bytes / 4 / 1000.0}


def predicted_costs(cost_model: CostModel, space: SearchSpace) -> CostFn:
    """Cost function of chapter 5: chapter 2's cost model on the static network of ``arch``, one segment."""
    shape = (1, space.n_features, space.n_frames)
    return lambda arch: costs_from_estimate(cost_model.predict(_static_model(space, arch), shape))


def measured_costs(device: Device, space: SearchSpace) -> CostFn:
    """Measured latency (median) and energy of ``arch``'s static network on ``device`` (finalists, chapter 5)."""
    shape = (1, space.n_features, space.n_frames)

    def measure(arch: Arch) -> dict[str, float]:
        model = _static_model(space, arch)
        stats = device.measure(model, shape)
        params = count_params(model)
        return {"latency_ms": stats.median, "energy_mj": device.energy_mj(stats), "memory_kb": params / 1000.0}

    return measure


def measure_finalists(history: History, measure: CostFn, k: int = 5) -> pd.DataFrame:
    """Measure up to ``k`` front architectures spread evenly along the energy axis; ``measured_*`` columns sit
    next to the predicted ones (chapter 5 checks the cost model on the architectures the search returns)."""
    front = history.front()
    if front.empty:
        return front
    picks = front.iloc[np.unique(np.linspace(0, len(front) - 1, min(k, len(front))).round().astype(int))]
    measured = [measure(Arch.from_json(a)) for a in picks["arch"]]
    extra = pd.DataFrame([{f"measured_{k_}": v for k_, v in m.items()} for m in measured], index=picks.index)
    return pd.concat([picks, extra], axis=1).reset_index(drop=True)


# --------------------------------------------------------------------------------------------- a stand-in
def _weights(space: SearchSpace, arch: Arch) -> int:
    return count_params(_static_model(space, arch))


def synthetic_objectives(space: SearchSpace, noise: float = 0.03, cache_path: str | os.PathLike | None = None
                         ) -> Objectives:
    """Cheap, deterministic stand-in objectives with the real interface (tests, timing the search's own cost).

    Accuracy rises smoothly with MACs (0.3 to about 0.85) plus a fixed offset of up to ``noise`` drawn from the
    architecture's id; energy and latency are proportional to MACs, memory to the weight count, scaled so that the
    space's largest architecture has 2.5 mJ and 120 kB: the space straddles Speckhard's thresholds (1.25 mJ, 60 kB).
    """
    largest = space.largest()
    mac_scale, weight_scale = space.macs(largest), _weights(space, largest)

    def offset(arch: Arch) -> float:
        return noise * (2 * int(hashlib.sha1(arch.arch_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 1)

    def accuracy(arch: Arch) -> dict[str, float]:
        acc = 0.3 + 0.55 * (1 - math.exp(-3 * space.macs(arch) / mac_scale)) + offset(arch)
        acc = min(max(acc, 0.0), 1.0)
        return {"acc": acc, "mae": 1.5 * (1 - acc)}

    def cost(arch: Arch) -> dict[str, float]:
        rel = space.macs(arch) / mac_scale
        return {"latency_ms": 2.0 * rel, "energy_mj": 2.5 * rel, "memory_kb": 120.0 * _weights(space, arch)
                / weight_scale, "macs": float(space.macs(arch))}

    space_id = hashlib.sha1(json.dumps(space.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return Objectives(accuracy, cost, cache_path, tag=f"synthetic space={space_id} noise={noise}")
