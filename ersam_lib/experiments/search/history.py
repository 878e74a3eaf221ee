"""What a search evaluated, in order, and the curves that compare strategies (chapter 5; Archai's history)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core.io import atomic_path, atomic_write_json, read_json
from ...measure.pareto import hypervolume_curve, pareto_mask
from ...measure.uncertainty import welch
from ...models.space import Arch, SearchSpace
from .budget import SearchBudget
from .objectives import REQUIRED_COSTS, Objectives
from .reward import Reward

__all__ = ["History", "against_random", "curves", "reference_point", "summarize_curves"]

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


def reference_point(space: SearchSpace, objectives: Objectives, budget: SearchBudget) -> tuple[float, float]:
    """The (error, energy) reference for hypervolumes: error 1, and the hard energy budget or 1.1 x the energy
    of the space's largest architecture (one point shared by every strategy and seed, so areas compare)."""
    if budget.max_energy_mj is not None:
        return 1.0, float(budget.max_energy_mj)
    return 1.0, 1.1 * objectives.cost(space.largest())["energy_mj"]


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


def against_random(long: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """Each strategy's final hypervolume against ``baseline``'s over their seeds (chapter 5): the means, the
    difference with its 95 % interval, Welch's p-value and the verdict ("<strategy> better", "random better" or "not
    distinguishable at this scale"). A seed's final value is its curve's last point."""
    last = long.loc[long.groupby(["strategy", "seed"], sort=False)["n_evals"].idxmax()]
    per_seed = {s: g["hypervolume"].to_numpy(float) for s, g in last.groupby("strategy", sort=False)}
    if baseline not in per_seed:
        raise ValueError(f"no {baseline!r} search to compare with; the strategies are {', '.join(per_seed)}")
    rows = []
    for strategy, values in per_seed.items():
        if strategy == baseline:
            continue
        t = welch(values, per_seed[baseline], metric="hypervolume")
        rows.append({"strategy": strategy, "n_seeds": len(values), "hv_mean": float(values.mean()),
                     f"{baseline}_mean": float(per_seed[baseline].mean()), "diff": t.diff.value,
                     "diff_low": t.diff.low, "diff_high": t.diff.high, "p": t.p_value,
                     "verdict": t.verdict(strategy, baseline)})
    return pd.DataFrame(rows)
