"""How sure a score is: intervals for accuracy and MAE, paired tests between two models, per-count tables.

The one home of the book's statistics (chapters 3-6). One accuracy measured on ``n`` windows is a binomial
proportion, so its interval is exact (Clopper-Pearson); a mean absolute error gets a bootstrap interval. Two models
scored on *the same* windows are compared pairwise, which is far more sensitive than comparing two intervals: exact
accuracy by McNemar's exact test (only the windows where one is right and the other wrong carry information), MAE by
a paired bootstrap of the per-window differences. A verdict is the test's at a stated level, never a difference read
by eye: ``"<a> better"``, ``"<b> better"`` or ``"not distinguishable at this scale"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["LEVEL", "UNDECIDED", "Interval", "Comparison", "accuracy_interval", "compare_predictions", "interval_text",
           "mcnemar", "mean_interval", "paired_bootstrap", "per_count_table", "rate_interval", "welch"]

LEVEL = 0.95  # the level of every interval and test in the book
UNDECIDED = "not distinguishable at this scale"
_N_BOOT = 4000


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval at ``level`` (``method`` says how it was computed)."""

    value: float
    low: float
    high: float
    level: float = LEVEL
    method: str = ""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, x: float) -> bool:
        return not self.low <= x <= self.high

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"60.4 [57.5, 63.2]"``: the value and its bounds, times ``scale`` (100: points)."""
        v, lo, hi = (round(scale * x, digits) for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interval_text(df: pd.DataFrame, col: str, scale: float = 100.0, digits: int = 1) -> pd.Series:
    """``col`` with its bounds ``col_low``/``col_high`` as text, ``"60.4 [57.5, 63.2]"`` (for the chapters' tables)."""
    return pd.Series([Interval(v, lo, hi).format(scale, digits) if pd.notna(v) else "-"
                      for v, lo, hi in zip(df[col], df[f"{col}_low"], df[f"{col}_high"])], index=df.index, name=col)


def _alpha(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"an interval's level must lie in (0, 1), got {level}")
    return 1 - level


def _clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    a = _alpha(level)
    low = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return low, high


def accuracy_interval(correct: ArrayLike, level: float = LEVEL) -> Interval:
    """Exact (Clopper-Pearson) interval of the share of ``True`` in ``correct`` (one flag per window)."""
    c = np.asarray(correct, bool).ravel()
    if c.size == 0:
        raise ValueError("an accuracy needs at least one window")
    return rate_interval(int(c.sum()), int(c.size), level)


def rate_interval(k: int, n: int, level: float = LEVEL) -> Interval:
    """Exact interval of ``k`` successes in ``n`` trials: what a recorded accuracy and its ``n`` allow."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    return Interval(k / n, *_clopper_pearson(k, n, level), level=level, method="Clopper-Pearson exact")


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``values``, drawn as multinomial counts over the distinct values (the same
    distribution as resampling windows; cheap because a count error takes few values)."""
    distinct, counts = np.unique(values, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(values.size, counts / values.size, size=n_boot)
    return draws @ distinct / values.size


def mean_interval(values: ArrayLike, level: float = LEVEL, n_boot: int = _N_BOOT, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of ``values`` (per-window absolute errors: the MAE's interval)."""
    v = np.asarray(values, float).ravel()
    if v.size == 0:
        raise ValueError("a mean needs at least one value")
    a = _alpha(level)
    boot = _bootstrap_means(v, n_boot, seed)
    low, high = np.quantile(boot, [a / 2, 1 - a / 2])
    return Interval(float(v.mean()), float(low), float(high), level=level, method="percentile bootstrap")


@dataclass(frozen=True)
class Comparison:
    """a against b: the difference a - b with its interval, the test that judged it (``test``) and its p-value."""

    test: str
    metric: str
    diff: Interval
    p_value: float
    n: int
    higher_is_better: bool = True

    @property
    def decided(self) -> bool:
        """The test rejects "no difference" at the interval's level (then the interval excludes 0 too)."""
        return self.p_value < 1 - self.diff.level

    def verdict(self, a: str = "a", b: str = "b") -> str:
        """``"<a> better"``, ``"<b> better"`` or :data:`UNDECIDED`, by the test."""
        if not self.decided:
            return UNDECIDED
        return f"{a if (self.diff.value > 0) == self.higher_is_better else b} better"

    def points(self, name: str) -> dict[str, float]:
        """The difference and its bounds in points (x 100) under ``name``, ``name_low``, ``name_high``: the columns
        every comparison table of chapters 3-6 shows."""
        return {name: 100 * self.diff.value, f"{name}_low": 100 * self.diff.low, f"{name}_high": 100 * self.diff.high}

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "metric": self.metric, "diff": self.diff.value, "diff_low": self.diff.low,
                "diff_high": self.diff.high, "p_value": self.p_value, "n": self.n, "level": self.diff.level}


def _paired(a: ArrayLike, b: ArrayLike, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype).ravel(), np.asarray(b, dtype).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"a paired test needs two equal, non-empty arrays (one value per window), got {x.shape} "
                         f"and {y.shape}")
    return x, y


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike, level: float = LEVEL) -> Comparison:
    """McNemar's exact test of two models' accuracies on the same windows (per-window flags "right").

    Of the ``m`` windows where exactly one model is right, a is the one in ``k``; with no difference, ``k`` follows
    Binomial(m, 1/2). The difference of accuracies is ``(2k - m) / n = (2 pi - 1) d`` with ``pi = k / m`` and
    ``d = m / n`` the share of discordant windows. Its interval combines the exact intervals of both: ``2 pi - 1``
    sets the sign of each bound (so the interval excludes 0 exactly when the test rejects) and ``d``'s bounds its
    size (``pi``'s interval alone, conditional on ``m``, would put the upper bound at the estimate whenever one model
    wins every discordant window). With no discordant window the difference is 0 but not known to be: its interval is
    +-(the exact upper bound of ``d``), what ``n`` windows allow.
    """
    x, y = _paired(correct_a, correct_b, bool)
    k, m, n = int(np.sum(x & ~y)), int(np.sum(x ^ y)), int(x.size)
    diff = (2 * k - m) / n
    if m == 0:
        u = _clopper_pearson(0, n, level)[1]
        return Comparison("McNemar exact", "accuracy", Interval(0.0, -u, u, level, "no discordant window"), 1.0, n)
    p = float(stats.binomtest(k, m, 0.5).pvalue)
    lo, hi = (2 * b - 1 for b in _clopper_pearson(k, m, level))
    d_lo, d_hi = _clopper_pearson(m, n, level)
    ci = Interval(diff, lo * (d_lo if lo > 0 else d_hi), hi * (d_hi if hi > 0 else d_lo), level,
                  "exact sign (McNemar) x exact share of discordant windows")
    return Comparison("McNemar exact", "accuracy", ci, p, n)


def paired_bootstrap(values_a: ArrayLike, values_b: ArrayLike, metric: str = "MAE", higher_is_better: bool = False,
                     level: float = LEVEL, n_boot: int = _N_BOOT, seed: int = 0) -> Comparison:
    """Paired bootstrap of the mean of per-window differences ``a - b`` (per-window absolute errors: MAE).

    The windows are resampled together, so what both models find hard cancels. The p-value is twice the share of
    resampled differences on the far side of 0 (at least ``1 / n_boot``).
    """
    x, y = _paired(values_a, values_b, float)
    d = x - y
    a = _alpha(level)
    if np.all(d == 0):
        return Comparison("paired bootstrap", metric, Interval(0.0, 0.0, 0.0, level, "paired bootstrap"), 1.0, d.size,
                          higher_is_better)
    boot = _bootstrap_means(d, n_boot, seed)
    lo, hi = np.quantile(boot, [a / 2, 1 - a / 2])
    p = min(1.0, max(2 * min(np.mean(boot <= 0), np.mean(boot >= 0)), 1 / n_boot))
    ci = Interval(float(d.mean()), float(lo), float(hi), level, "paired percentile bootstrap")
    return Comparison("paired bootstrap", metric, ci, float(p), int(d.size), higher_is_better)


def welch(values_a: ArrayLike, values_b: ArrayLike, metric: str = "mean", higher_is_better: bool = True,
          level: float = LEVEL) -> Comparison:
    """Welch's t-test and interval for the difference of two means from independent samples (a figure measured over
    a few seeds of each of two methods: chapter 5's hypervolume per search seed). With fewer than two values on a
    side there is no spread to judge by: the interval is unbounded and nothing is decided."""
    x, y = np.asarray(values_a, float).ravel(), np.asarray(values_b, float).ravel()
    diff = float(x.mean() - y.mean()) if x.size and y.size else float("nan")
    if x.size < 2 or y.size < 2:
        return Comparison("Welch t", metric, Interval(diff, -np.inf, np.inf, level, "Welch t"), 1.0,
                          int(x.size + y.size), higher_is_better)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if va + vb == 0:  # no spread on either side: equal means decide nothing, different ones everything
        p = 1.0 if diff == 0 else 0.0
        return Comparison("Welch t", metric, Interval(diff, diff, diff, level, "Welch t"), p, int(x.size + y.size),
                          higher_is_better)
    dof = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    se, q = np.sqrt(va + vb), stats.t.ppf(1 - _alpha(level) / 2, dof)
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return Comparison("Welch t", metric, Interval(diff, diff - q * se, diff + q * se, level, "Welch t"), p,
                      int(x.size + y.size), higher_is_better)


def compare_predictions(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike,
                        level: float = LEVEL, seed: int = 0) -> dict[str, Comparison]:
    """Both of the book's paired tests for two models' count predictions on the same windows: ``"acc"`` (McNemar)
    and ``"mae"`` (paired bootstrap of absolute errors; lower is better)."""
    y = np.asarray(y_true, np.int64).ravel()
    pa, pb = _paired(pred_a, pred_b, np.int64)
    if pa.size != y.size:
        raise ValueError(f"{y.size} labels but {pa.size} predictions")
    return {"acc": mcnemar(pa == y, pb == y, level),
            "mae": paired_bootstrap(np.abs(pa - y), np.abs(pb - y), level=level, seed=seed)}


def per_count_table(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[int] | None = None,
                    level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """CountNet's table: per true count ``k``, its windows, exact accuracy and MAE, each with its interval."""
    y, p = _paired(y_true, y_pred, np.int64)
    rows = []
    for k in classes if classes is not None else np.unique(y):
        sel = y == k
        row: dict[str, Any] = {"k": int(k), "n": int(sel.sum())}
        if sel.any():
            acc, mae = accuracy_interval(p[sel] == k, level), mean_interval(np.abs(p[sel] - k), level, seed=seed)
            row |= {"acc": acc.value, "acc_low": acc.low, "acc_high": acc.high,
                    "mae": mae.value, "mae_low": mae.low, "mae_high": mae.high}
        rows.append(row)
    return pd.DataFrame(rows)
