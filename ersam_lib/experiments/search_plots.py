"""Figures of chapter 5: the frontier with the baselines, hypervolume against evaluations, best reward so far."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .search import History

__all__ = ["plot_best_reward", "plot_frontier", "plot_hypervolume"]

_LABELS = {"energy_mj": "energy per 5-s segment (mJ)", "latency_ms": "latency per 5-s segment (ms)",
           "memory_kb": "int8 weights (kB)", "error": "error (1 - accuracy)", "mae": "MAE (speakers)"}


def plot_frontier(histories: History | Sequence[History], baselines: pd.DataFrame | None = None,
                  x: str = "energy_mj", y: str = "error", budget: float | None = None,
                  ax: plt.Axes | None = None, logx: bool = False) -> plt.Figure:
    """Every evaluated architecture (faint), each strategy's front (steps), and ``baselines`` as labelled points.

    ``baselines``: one row per model with a ``name`` column and the ``x``/``y`` columns (e.g. CountNet, TC-ResNet,
    the teacher, scored on the same split and costed by the same model). ``budget`` draws the hard limit on ``x``.
    """
    hs = [histories] if isinstance(histories, History) else list(histories)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.5))
    df = History.concat(hs).df
    for i, (strategy, g) in enumerate(df.groupby("strategy", sort=False)):
        color = f"C{i}"
        ax.scatter(g[x], g[y], s=8, alpha=0.25, color=color)
        front = History(g).front(x, y)
        ax.step(front[x], front[y], where="post", color=color, lw=1.5, marker="o", ms=3, label=f"{strategy} front")
    if baselines is not None and len(baselines):
        ax.scatter(baselines[x], baselines[y], marker="s", s=40, color="k", zorder=3, label="baselines")
        for _, r in baselines.iterrows():
            ax.annotate(str(r["name"]), (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if budget is not None:
        ax.axvline(budget, color="grey", ls="--", lw=1, label="hard budget")
    ax.set(xlabel=_LABELS.get(x, x), ylabel=_LABELS.get(y, y), xscale="log" if logx else "linear")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _curve_plot(summary: pd.DataFrame, stem: str, ylabel: str, spread: str, ax: plt.Axes | None) -> plt.Figure:
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4))
    for i, (strategy, g) in enumerate(summary.groupby("strategy", sort=False)):
        n = g["n_evals"].to_numpy()
        mean = g[f"{stem}_mean"].to_numpy()
        if spread == "minmax":
            lo, hi = g[f"{stem}_min"].to_numpy(), g[f"{stem}_max"].to_numpy()
        else:
            sd = np.nan_to_num(g[f"{stem}_std"].to_numpy())
            lo, hi = mean - sd, mean + sd
        seeds = int(g["n_seeds"].max())
        ax.plot(n, mean, color=f"C{i}", lw=1.5, label=f"{strategy} ({seeds} seeds)")
        ax.fill_between(n, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
    ax.set(xlabel="evaluated architectures", ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_hypervolume(summary: pd.DataFrame, spread: str = "minmax", ax: plt.Axes | None = None) -> plt.Figure:
    """Hypervolume of the (error, energy) front against evaluations: mean over seeds, band = min..max (or
    ``spread="std"``: mean +- one standard deviation). ``summary``:
    :func:`ersam_lib.experiments.search.summarize_curves` of :func:`ersam_lib.experiments.search.curves`."""
    return _curve_plot(summary, "hv", "hypervolume of the (error, energy) front", spread, ax)


def plot_best_reward(summary: pd.DataFrame, spread: str = "minmax", ax: plt.Axes | None = None) -> plt.Figure:
    """Best reward found so far against evaluations, mean and spread over seeds (Speckhard's reward)."""
    return _curve_plot(summary, "reward", "best reward so far", spread, ax)
