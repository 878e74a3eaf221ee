"""Pareto fronts and hypervolume, numpy only (chapter 5: the accuracy/energy frontier, comparing search strategies).

Every objective is *minimised* here (pass error rather than accuracy). Conventions:

- ``a`` dominates ``b`` when ``a <= b`` in every objective and ``a < b`` in at least one; equal points therefore do
  not dominate each other: duplicates share a front (and a rank), and ``pareto_mask`` keeps every copy;
- rows with a NaN are never on a front (rank ``-1``) and never add hypervolume: a search records an architecture
  it could not score that way;
- the 2-D hypervolume is the area dominated by the points and bounded by the reference point ``ref``; a point that
  is not strictly better than ``ref`` in both objectives adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dominates", "non_dominated_sort", "pareto_mask", "pareto_front", "hypervolume_2d", "hypervolume_curve"]


def _as_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim == 1 and p.size == 0:
        return p.reshape(0, 2)
    if p.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n_points, n_objectives), got shape {p.shape}")
    return p


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one (all minimised)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Front rank of every point: 0 for the Pareto front, 1 for the front once rank 0 is removed, and so on.

    Deb's fast non-dominated sort, O(M N^2) with numpy; ties and duplicates share a rank, rows with a NaN get -1.
    """
    p = _as_points(points)
    n = len(p)
    rank = np.full(n, -1, dtype=int)
    ok = ~np.isnan(p).any(axis=1)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return rank
    q = p[idx]
    le = np.all(q[:, None, :] <= q[None, :, :], axis=2)
    lt = np.any(q[:, None, :] < q[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    n_dominators = dom.sum(axis=0)
    current = np.flatnonzero(n_dominators == 0)
    r = 0
    while current.size:
        rank[idx[current]] = r
        n_dominators = n_dominators - dom[current].sum(axis=0)
        n_dominators[current] = -1  # done; never picked again
        current = np.flatnonzero(n_dominators == 0)
        r += 1
    return rank


def pareto_mask(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Boolean mask of the non-dominated points (every copy of a duplicated front point is kept)."""
    p = _as_points(points)
    mask = ~np.isnan(p).any(axis=1)
    good = np.flatnonzero(mask)
    # a sweep in lexicographic order keeps this O(N log N) in 2-D; the general case falls back to the sort
    if p.shape[1] != 2:
        return non_dominated_sort(p) == 0
    order = good[np.lexsort((p[good, 1], p[good, 0]))]
    best_y, best_x_at_best_y = np.inf, np.nan
    out = np.zeros(len(p), dtype=bool)
    for i in order:
        x, y = p[i]
        if y < best_y:
            out[i], best_y, best_x_at_best_y = True, y, x
        elif y == best_y and x == best_x_at_best_y:
            out[i] = True  # an exact duplicate of a front point
    return out


def pareto_front(points: np.ndarray | Sequence[Sequence[float]], unique: bool = True) -> np.ndarray:
    """The non-dominated points sorted by the first objective (duplicates dropped unless ``unique=False``)."""
    p = _as_points(points)
    front = p[pareto_mask(p)]
    if unique and len(front):
        front = np.unique(front, axis=0)
    return front[np.lexsort(front.T[::-1])] if len(front) else front


def hypervolume_2d(points: np.ndarray | Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """Area dominated by ``points`` (two minimised objectives) and bounded by the reference point ``ref``."""
    p = _as_points(points)
    if p.shape[1] != 2:
        raise ValueError(f"hypervolume_2d needs 2 objectives, got {p.shape[1]}")
    rx, ry = (float(v) for v in ref)
    p = p[~np.isnan(p).any(axis=1)]
    p = p[(p[:, 0] < rx) & (p[:, 1] < ry)]
    if not len(p):
        return 0.0
    f = pareto_front(p)  # sorted by x ascending, so y is strictly descending
    widths = np.diff(np.append(f[:, 0], rx))
    return float(np.sum(widths * (ry - f[:, 1])))


def hypervolume_curve(points: np.ndarray | Sequence[Sequence[float]], ref: Sequence[float]) -> np.ndarray:
    """Hypervolume of the first ``n`` points for every ``n`` (the y-axis of chapter 5's strategy comparison).

    Keeps only the running front, so a search history of a few thousand evaluations costs milliseconds.
    """
    p = _as_points(points)
    out = np.zeros(len(p))
    front = np.empty((0, p.shape[1]))
    hv = 0.0
    for i, pt in enumerate(p):
        if not np.isnan(pt).any() and not any(dominates(f, pt) or np.array_equal(f, pt) for f in front):
            keep = [not dominates(pt, f) for f in front]
            front = np.vstack([front[np.array(keep, dtype=bool)], pt[None, :]])
            hv = hypervolume_2d(front, ref)
        out[i] = hv
    return out
