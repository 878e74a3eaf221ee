"""Figures of chapter 1 (one call per figure, so the notebook stays narrative)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .config import FeatureConfig
from .features import compute_features
from .vad import FRAME, from_runs, to_runs


def plot_vad(audio: np.ndarray, vad: np.ndarray, title: str = "") -> plt.Figure:
    """Waveform of one utterance with its 10-ms VAD track shaded."""
    fig, ax = plt.subplots(figsize=(9, 2.4))
    t = np.arange(len(audio)) / 16000
    ax.plot(t, audio, lw=0.4, color="0.3")
    for a, b in to_runs(vad):
        ax.axvspan(a * FRAME / 16000, b * FRAME / 16000, color="tab:green", alpha=0.25, lw=0)
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title or "speech activity (green) from WebRTC VAD")
    fig.tight_layout()
    return fig


def plot_class_balance(counts: pd.DataFrame, classes: list[str]) -> plt.Figure:
    """Mixtures per class and split (the sampler balances them on the VAD label)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    counts.rename(index=dict(enumerate(classes))).plot.bar(ax=ax, width=0.8)
    ax.set(xlabel="class", ylabel="mixtures", title="class balance per split")
    fig.tight_layout()
    return fig


def plot_overlap(manifest: pd.DataFrame) -> plt.Figure:
    """Distribution of the overlap share (frames with >= 2 speakers / speech frames) for each k >= 1."""
    ks = sorted(k for k in manifest["count"].unique() if k >= 1)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.boxplot([manifest.loc[manifest["count"] == k, "overlap"] for k in ks])
    ax.set_xticks(range(1, len(ks) + 1), [str(k) for k in ks])
    ax.set(xlabel="k (max concurrent speakers)", ylabel="overlap share", title="how much of the speech overlaps")
    fig.tight_layout()
    return fig


def plot_agreement(manifest: pd.DataFrame) -> plt.Figure:
    """Label k against speakers drawn, one panel per placement (fill: the diagonal; sparse: below it)."""
    speech = manifest[manifest["n_drawn"] > 0]
    places = sorted(speech["placement"].unique())
    fig, axes = plt.subplots(1, len(places), figsize=(4 * len(places), 3.4), squeeze=False)
    for ax, place in zip(axes[0], places):
        tab = pd.crosstab(speech.loc[speech.placement == place, "count"], speech.loc[speech.placement == place, "n_drawn"])
        ax.imshow(tab.to_numpy(), origin="lower", cmap="Blues", aspect="auto")
        ax.set(xticks=range(tab.shape[1]), xticklabels=tab.columns, yticks=range(tab.shape[0]), yticklabels=tab.index,
               xlabel="speakers drawn", ylabel="label k", title=f"{place} placement")
    fig.tight_layout()
    return fig


def plot_mixture(row: pd.Series, audio: np.ndarray, cfg: FeatureConfig) -> plt.Figure:
    """One mixture: its log-mel spectrogram above each speaker's activity track (label = max stacked height)."""
    act = [from_runs(r, len(audio) // FRAME) for r in json.loads(row["activity"])]
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax0.imshow(compute_features(audio, "logmel", cfg), origin="lower", aspect="auto", cmap="magma",
               extent=[0, len(audio) / 16000, 0, cfg.n_mels])
    ax0.set(ylabel="mel band", title=f"k = {row['count']} ({row['n_drawn']} drawn, {row['placement']} placement)")
    t = np.arange(len(audio) // FRAME) * FRAME / 16000
    for i, a in enumerate(act):
        ax1.fill_between(t, i, i + 0.8 * a, step="post", alpha=0.8)
    ax1.plot(t, np.sum(act, axis=0) if act else np.zeros_like(t), color="k", lw=1, label="active speakers")
    ax1.set(xlabel="time (s)", ylabel="speaker")
    ax1.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig



def plot_spectrograms(audios: dict[str, np.ndarray], cfg: FeatureConfig, title: str = "") -> plt.Figure:
    """Log-mel spectrograms side by side, one panel per named waveform (chapter 1: synthetic next to real)."""
    fig, axes = plt.subplots(1, len(audios), figsize=(4.6 * len(audios), 3.2), squeeze=False, sharey=True)
    for ax, (name, audio) in zip(axes[0], audios.items()):
        ax.imshow(compute_features(audio, "logmel", cfg), origin="lower", aspect="auto", cmap="magma",
                  extent=[0, len(audio) / 16000, 0, cfg.n_mels])
        ax.set(title=name, xlabel="time (s)")
    axes[0][0].set_ylabel("mel band")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
