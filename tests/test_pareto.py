"""Non-dominated sorting and hypervolume (chapter 5) on hand-made points."""

from __future__ import annotations

import numpy as np
import pytest

from ersam_lib.measure.pareto import (dominates, hypervolume_2d, hypervolume_curve, non_dominated_sort, pareto_front,
                                      pareto_mask)

# (error, energy): A, B, C on the front; D dominated by B; E dominated by D and B; F duplicates B; G ties C on x
PTS = np.array([[0.1, 5.0],   # A
                [0.2, 3.0],   # B
                [0.4, 1.0],   # C
                [0.3, 4.0],   # D  (B is better in both)
                [0.5, 4.5],   # E  (D better in both)
                [0.2, 3.0],   # F  (= B)
                [0.4, 2.0]])  # G  (C has the same error and less energy)


def test_dominates_is_strict_and_ties_do_not_dominate() -> None:
    assert dominates([0.2, 3.0], [0.3, 4.0])
    assert dominates([0.4, 1.0], [0.4, 2.0])  # equal in one, better in the other
    assert not dominates([0.2, 3.0], [0.2, 3.0])  # a duplicate
    assert not dominates([0.1, 5.0], [0.2, 3.0])  # a trade-off


def test_non_dominated_sort_ranks_fronts_with_ties_and_duplicates() -> None:
    ranks = non_dominated_sort(PTS)
    assert ranks.tolist() == [0, 0, 0, 1, 2, 0, 1]  # B and its duplicate F share rank 0; G waits behind C


def test_nan_rows_are_never_ranked_and_never_on_the_front() -> None:
    pts = np.vstack([PTS, [np.nan, 0.0]])
    assert non_dominated_sort(pts)[-1] == -1
    assert not pareto_mask(pts)[-1]
    assert non_dominated_sort(np.full((2, 2), np.nan)).tolist() == [-1, -1]


def test_pareto_mask_agrees_with_rank_zero_and_keeps_duplicates() -> None:
    assert pareto_mask(PTS).tolist() == [True, True, True, False, False, True, False]
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.integers(0, 6, size=(40, 2)).astype(float)  # many ties and duplicates
        assert np.array_equal(pareto_mask(pts), non_dominated_sort(pts) == 0)
    pts3 = rng.random((30, 3))
    assert np.array_equal(pareto_mask(pts3), non_dominated_sort(pts3) == 0)


def test_pareto_front_is_unique_and_sorted() -> None:
    assert pareto_front(PTS).tolist() == [[0.1, 5.0], [0.2, 3.0], [0.4, 1.0]]
    assert len(pareto_front(PTS, unique=False)) == 4
    assert pareto_front(np.empty((0, 2))).shape == (0, 2)


def test_hypervolume_2d_by_hand() -> None:
    ref = (1.0, 6.0)
    # staircase: A covers x 0.1..0.2 at height 6-5=1; B 0.2..0.4 at 3; C 0.4..1.0 at 5
    expected = 0.1 * 1.0 + 0.2 * 3.0 + 0.6 * 5.0
    assert hypervolume_2d(PTS, ref) == pytest.approx(expected)
    assert hypervolume_2d(PTS[[0]], ref) == pytest.approx(0.9 * 1.0)
    # dominated points, duplicates and points beyond the reference add nothing
    assert hypervolume_2d(np.vstack([PTS, [[2.0, 0.0], [0.0, 7.0], [1.0, 1.0]]]), ref) == pytest.approx(expected)
    assert hypervolume_2d(np.empty((0, 2)), ref) == 0.0
    assert hypervolume_2d([[0.5, 0.5]], (1.0, 1.0)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="2 objectives"):
        hypervolume_2d(np.zeros((2, 3)), (1, 1, 1))


def test_hypervolume_curve_is_monotone_and_matches_prefix_hypervolumes() -> None:
    ref = (1.0, 6.0)
    rng = np.random.default_rng(1)
    pts = np.vstack([PTS, rng.random((50, 2)) * [1.0, 6.0], [[np.nan, 1.0]]])
    curve = hypervolume_curve(pts, ref)
    assert curve.shape == (len(pts),)
    assert np.all(np.diff(curve) >= 0)
    for n in (1, 3, 7, 20, len(pts)):
        assert curve[n - 1] == pytest.approx(hypervolume_2d(pts[:n], ref))


def test_pick_finalists_spreads_along_the_front_and_meets_each_anchor() -> None:
    import pandas as pd

    from ersam_lib.experiments.frontier import pick_finalists

    front = pd.DataFrame({"energy_mj": [5.0, 1.0, 2.0, 3.0, 4.0, 8.0], "acc": [0.55, 0.40, 0.45, 0.50, 0.52, 0.56]})
    spread = pick_finalists(front, 3)
    assert spread["energy_mj"].tolist() == [1.0, 3.0, 8.0]  # both ends and the middle, sorted by energy
    anchored = pick_finalists(front, 3, anchors=[4.5, 0.5, 100.0, 5.0])
    # 4.5 mJ -> the 4-mJ row (the most accurate within it), 0.5 -> below the front: nothing, 100 and 5 -> rows there
    assert anchored["energy_mj"].tolist() == [1.0, 3.0, 4.0, 5.0, 8.0]
    assert pick_finalists(front.head(2), 4)["energy_mj"].tolist() == [1.0, 5.0]
    with pytest.raises(ValueError):
        pick_finalists(front, 0)
