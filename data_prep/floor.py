"""The shortcut floor (chapter 1): how far a linear classifier gets on per-band log-mel mean and std alone.

These 2F numbers carry loudness, spectral tilt and how much the level varies over time, but no temporal structure.
Whatever accuracy they reach is available without modelling speakers at all; every later model must clearly beat it.
"""

from __future__ import annotations

import os

import numpy as np

from .features import feature_splits, load_features


def band_stats(x: np.ndarray) -> np.ndarray:
    """(N, 2F): per-band mean and standard deviation over time of (N, F, T) features."""
    x = np.asarray(x, np.float32)
    return np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)


def shortcut_floor(run_dir: str | os.PathLike, kind: str = "logmel", seed: int = 0) -> dict[str, float]:
    """Fit a standardised logistic regression on train band statistics; accuracy and MAE on every split (the
    real ones too, when the run built them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sets = {s: load_features(run_dir, s, kind) for s in feature_splits(run_dir, kind)}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    clf.fit(band_stats(sets["train"].x), sets["train"].y)
    out = {"chance": 1.0 / len(sets["train"].classes)}
    for split in sets:
        pred = clf.predict(band_stats(sets[split].x))
        out[f"acc_{split}"] = float((pred == sets[split].y).mean())
        out[f"mae_{split}"] = float(np.abs(pred - sets[split].y).mean())
    return out
