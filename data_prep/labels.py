"""The label of a mixture: maximum concurrent speakers, and the two class sets (chapter 1).

``counts``: classes 0..K (LibriCount, K = 10). ``levels``: four social-ambiance levels "none" to "active" (the
coarser scale of Chen et al., Front. Psychiatry 2021); the exact bins are not published, ours are stated below.
"""

from __future__ import annotations

import numpy as np

# Our bins for the four ambiance levels (an assumption, see the chapter): 0 | 1 | 2-3 | 4+ speakers.
LEVELS: tuple[tuple[str, int, int], ...] = (("none", 0, 0), ("low", 1, 1), ("moderate", 2, 3), ("active", 4, 10**6))
# The lowest count of "low", "moderate" and "active" under those bins: 1 | 2 | 4.
DEFAULT_THRESHOLDS: tuple[int, ...] = tuple(lo for _, lo, _ in LEVELS[1:])


def max_concurrent(activity: np.ndarray) -> int:
    """k = max over frames of the number of active speakers; ``activity`` is (speakers, frames) boolean."""
    activity = np.asarray(activity, bool)
    if activity.ndim != 2:
        raise ValueError(f"activity must be (speakers, frames), got shape {activity.shape}")
    if activity.shape[0] == 0 or activity.shape[1] == 0:
        return 0
    return int(activity.sum(axis=0).max())


def overlap_fraction(activity: np.ndarray) -> float:
    """Share of speech frames (>= 1 speaker active) in which two or more speakers overlap."""
    activity = np.asarray(activity, bool)
    if activity.size == 0:
        return 0.0
    n = activity.sum(axis=0)
    speech = int((n >= 1).sum())
    return float((n >= 2).sum() / speech) if speech else 0.0


def class_names(class_set: str, max_count: int) -> list[str]:
    """Names of the classes: ``["0", ..., "K"]`` or the four level names."""
    if class_set == "counts":
        return [str(k) for k in range(max_count + 1)]
    if class_set == "levels":
        return [name for name, _, _ in LEVELS]
    raise ValueError(f"class_set must be 'counts' or 'levels', got {class_set!r}")


def class_of(count: int, class_set: str, max_count: int) -> int:
    """Class index of a speaker count (``-1`` when it lies outside the class set, e.g. above K)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count > max_count:
        return -1
    if class_set == "counts":
        return count
    for i, (_, lo, hi) in enumerate(LEVELS):
        if lo <= count <= hi:
            return i
    return -1  # pragma: no cover - LEVELS covers all counts


def counts_of_class(index: int, class_set: str, max_count: int) -> list[int]:
    """The speaker counts that fall in class ``index`` (used to aim the sampler at an under-filled class)."""
    if class_set == "counts":
        return [index]
    _, lo, hi = LEVELS[index]
    return list(range(lo, min(hi, max_count) + 1))


def level_of(counts: np.ndarray | list[int], thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Ambiance level index (0 none, 1 low, 2 moderate, 3 active) of each speaker count, given the lowest count of
    low, moderate and active (three increasing counts >= 1; chapters 5-6 score models on this coarser scale)."""
    return np.searchsorted(np.asarray(thresholds), np.asarray(counts), side="right")
