"""Figures of chapter 2: warm-up trace, the cost blow-up grid, operators vs FLOPs, and the validation scatters."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..measure.costrule import CostRule

__all__ = ["plot_blowup", "plot_call_trace", "plot_ops_vs_macs", "plot_validation"]


def plot_call_trace(samples_ms: Sequence[float], title: str = "") -> plt.Figure:
    """Latency of each call of a fresh model: the first calls pay for allocation and cold caches."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(1, len(samples_ms) + 1), samples_ms, "o-", ms=3)
    ax.axhline(float(np.median(samples_ms)), color="k", ls="--", lw=1, label="median")
    ax.set(xlabel="call", ylabel="latency (ms)", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_blowup(grid: pd.DataFrame, rule: CostRule) -> plt.Figure:
    """One heat map per sequence length: stride-1 Conv1d latency over channels x kernel; x marks what the rule
    forbids."""
    d = grid[(grid["op"] == "conv1d") & (grid["stride"] == 1)]
    lens = sorted(d["seq_len"].unique())
    fig, axes = plt.subplots(1, len(lens), figsize=(3.1 * len(lens), 3.2), squeeze=False)
    vmin, vmax = np.log10(d["median"].min()), np.log10(d["median"].max())
    for ax, t in zip(axes[0], lens):
        tab = d[d["seq_len"] == t].pivot(index="channels", columns="kernel", values="median")
        im = ax.imshow(np.log10(tab.to_numpy()), origin="lower", vmin=vmin, vmax=vmax, cmap="magma", aspect="auto")
        ax.set_xticks(range(len(tab.columns)), tab.columns)
        ax.set_yticks(range(len(tab.index)), tab.index)
        for i, c in enumerate(tab.index):
            for j, k in enumerate(tab.columns):
                if not rule.allows(int(c), int(k), int(t)):
                    ax.text(j, i, "x", ha="center", va="center", color="cyan", fontsize=11, weight="bold")
        ax.set(title=f"L = {t}", xlabel="kernel")
    axes[0][0].set_ylabel("channels (in = out)")
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 latency (ms)", shrink=0.8)
    return fig


def plot_ops_vs_macs(grid: pd.DataFrame) -> plt.Figure:
    """Latency against MACs for every operator family: FLOPs alone do not tell the cost."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for op, g in grid.groupby("op"):
        ax.scatter(g["macs"].clip(lower=1), g["median"], s=12, label=op, alpha=0.8)
    ax.set(xscale="log", yscale="log", xlabel="MACs", ylabel="median latency (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_validation(val: pd.DataFrame, baselines: pd.DataFrame | None = None) -> plt.Figure:
    """Predicted vs measured latency (with the +-10 % band), MACs vs latency, latency vs energy."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    extra = [] if baselines is None else [(baselines, "baselines", "s")]
    both = pd.concat([val, *(e[0] for e in extra)])
    lo = min(both["measured_ms"].min(), both["latency_ms"].min(), both["lut_latency_ms"].min()) * 0.8
    hi = max(both["measured_ms"].max(), both["latency_ms"].max()) * 1.2
    for df, label, marker in [(val, "held-out space archs", "o"), *extra]:
        axes[0].scatter(df["measured_ms"], df["latency_ms"], s=14, marker=marker, label=label)
        axes[0].scatter(df["measured_ms"], df["lut_latency_ms"], s=8, marker=marker, alpha=0.35,
                        label=f"{label}: LUT sum only")
        axes[1].scatter(df["macs"], df["measured_ms"], s=14, marker=marker, label=label)
        axes[2].scatter(df["measured_ms"], df["measured_energy_mj"], s=14, marker=marker, label=label)
    xs = np.geomspace(lo, hi, 50)
    axes[0].plot(xs, xs, "k-", lw=1)
    axes[0].fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.25, label="+-10 %")
    axes[0].set(xscale="log", yscale="log", xlabel="measured latency (ms)", ylabel="predicted latency (ms)")
    axes[1].set(xscale="log", yscale="log", xlabel="MACs", ylabel="measured latency (ms)")
    axes[2].set(xscale="log", yscale="log", xlabel="measured latency (ms)", ylabel="energy per segment (mJ)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
