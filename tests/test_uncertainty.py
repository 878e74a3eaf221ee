"""The book's statistics against known cases: exact binomial intervals, a hand-made McNemar table, the bootstrap."""

import numpy as np
import pytest

from ersam_lib.measure.uncertainty import (UNDECIDED, accuracy_interval, compare_predictions, mcnemar, mean_interval,
                                           paired_bootstrap, per_count_table, rate_interval)


def test_exact_intervals_match_the_textbook_values():
    iv = rate_interval(5, 10)  # Clopper-Pearson for 5 of 10: 0.1871 to 0.8129
    assert (iv.low, iv.high) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    none = rate_interval(0, 10)  # 0 of 10: upper bound 1 - 0.025 ** (1 / 10)
    assert none.low == 0 and none.high == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    assert rate_interval(10, 10).high == 1.0 and rate_interval(10, 10).low == pytest.approx(0.025 ** 0.1)
    half = rate_interval(550, 1100).half_width  # the 1,100 windows: about +-3 points at 50 %
    assert 0.0295 < half < 0.031
    assert rate_interval(2000, 4000).half_width < 0.016  # about 4,000 windows give the +-1.5 points asked for
    assert accuracy_interval([True] * 5 + [False] * 5) == iv
    assert iv.format() == "50.0 [18.7, 81.3]"


def test_exact_intervals_cover_at_least_their_level():
    rng = np.random.default_rng(0)
    k = rng.binomial(40, 0.3, size=3000)
    covered = [rate_interval(int(x), 40).low <= 0.3 <= rate_interval(int(x), 40).high for x in k]
    assert np.mean(covered) >= 0.95


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="k <= n"):
        rate_interval(11, 10)
    with pytest.raises(ValueError, match="at least one"):
        accuracy_interval([])
    with pytest.raises(ValueError, match="level"):
        rate_interval(1, 2, level=1.5)
    with pytest.raises(ValueError, match="equal, non-empty"):
        mcnemar([True, False], [True])
    with pytest.raises(ValueError, match="labels but"):
        compare_predictions([0, 1, 2], [0, 1], [1, 1])


def _table(a_only: int, b_only: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_on_hand_made_tables():
    # 10 windows only a gets right, 2 only b: p = 2 * P(X >= 10 | Bin(12, 1/2)) = 2 * 79 / 4096
    t = mcnemar(*_table(10, 2, 60, 28))
    assert t.p_value == pytest.approx(158 / 4096)
    assert t.diff.value == pytest.approx(0.08) and t.diff.low > 0
    assert t.verdict("int8", "float") == "int8 better"
    # 7 against 3: p = 2 * 176 / 1024, not decided; the interval holds 0
    u = mcnemar(*_table(3, 7, 50, 40))
    assert u.p_value == pytest.approx(352 / 1024) and not u.decided and not u.diff.excludes(0)
    assert u.verdict() == UNDECIDED
    # no discordant window: nothing to decide
    same = mcnemar(*_table(0, 0, 5, 5))
    assert same.p_value == 1.0 and same.diff.value == 0 and same.verdict() == UNDECIDED
    assert same.diff.high == pytest.approx(1 - 0.025 ** 0.1)  # 10 windows cannot show two models equal


def test_mcnemar_interval_and_test_agree_on_every_small_table():
    for m in range(1, 41):
        for k in range(m + 1):
            t = mcnemar(*_table(k, m - k, 20, 20))
            assert t.decided == t.diff.excludes(0), (k, m)


def test_bootstrap_interval_of_a_mean():
    assert mean_interval([1, 1, 1]).low == mean_interval([1, 1, 1]).high == 1
    v = np.random.default_rng(1).normal(size=2000)
    iv = mean_interval(v)
    assert iv.value == pytest.approx(v.mean()) and iv.low < iv.value < iv.high
    assert iv.half_width == pytest.approx(1.96 * v.std() / np.sqrt(v.size), rel=0.1)
    assert mean_interval(v, seed=3) == mean_interval(v, seed=3)


def test_paired_bootstrap_decides_a_clear_difference_and_not_noise():
    rng = np.random.default_rng(2)
    err_b = rng.integers(0, 3, size=2000)
    better = np.maximum(err_b - (rng.random(2000) < 0.3), 0)  # a makes 0.3 fewer errors on a third of windows
    t = paired_bootstrap(better, err_b)
    assert t.decided and t.diff.high < 0 and t.verdict("a", "b") == "a better"
    noise = paired_bootstrap(rng.permutation(err_b), err_b)
    assert noise.diff.low < 0 < noise.diff.high or not noise.decided
    assert paired_bootstrap(err_b, err_b).verdict() == UNDECIDED


def test_compare_predictions_and_the_per_count_table():
    y = np.array([0, 1, 1, 2, 2, 2, 3, 3])
    a = np.array([0, 1, 1, 2, 2, 1, 3, 2])
    b = np.array([1, 1, 2, 2, 1, 1, 3, 3])
    tests = compare_predictions(y, a, b)
    assert tests["acc"].diff.value == pytest.approx((6 - 4) / 8)
    assert tests["mae"].diff.value == pytest.approx((2 - 4) / 8) and not tests["mae"].higher_is_better
    table = per_count_table(y, a, classes=[0, 1, 2, 3, 4]).set_index("k")
    assert table.loc[2, "n"] == 3 and table.loc[2, "acc"] == pytest.approx(2 / 3)
    assert table.loc[3, "mae"] == pytest.approx(0.5) and table.loc[3, "acc_low"] < 0.5 < table.loc[3, "acc_high"]
    assert table.loc[4, "n"] == 0 and np.isnan(table.loc[4, "acc"])


def test_count_report_carries_intervals_and_per_count_errors():
    from ersam_lib.measure.evaluation import count_report

    y = np.array([0, 1, 1, 2, 2, 2, 3, 3] * 25)
    p = np.array([0, 1, 1, 2, 2, 1, 3, 2] * 25)
    r = count_report(y, p, n_classes=5)
    iv = accuracy_interval(p == y)
    assert (r["acc"], r["acc_low"], r["acc_high"]) == (iv.value, iv.low, iv.high)
    assert r["mae_low"] < r["mae"] < r["mae_high"] and r["mae"] == pytest.approx(2 / 8)
    assert r["per_class_mae"][:4] == pytest.approx([0.0, 0.0, 1 / 3, 0.5]) and r["per_class_mae"][4] is None


def test_welch_matches_scipy_and_decides_nothing_without_a_spread():
    from scipy import stats

    from ersam_lib.measure.uncertainty import welch

    a, b = [11.7, 11.6, 11.8], [11.2, 11.3, 11.25]
    t = welch(a, b, metric="hypervolume")
    assert t.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert t.diff.value == pytest.approx(np.mean(a) - np.mean(b)) and t.diff.low > 0
    assert t.verdict("evo", "random") == "evo better"
    close = welch([11.7, 11.5, 11.6], [11.65, 11.55, 11.62])
    assert close.verdict() == UNDECIDED and close.diff.low < 0 < close.diff.high
    one = welch([11.7], [11.2])  # one seed a side (smoke): no spread, no verdict
    assert one.verdict() == UNDECIDED and one.diff.low == -np.inf
    assert welch([2.0, 2.0], [1.0, 1.0]).decided and not welch([1.0, 1.0], [1.0, 1.0]).decided


def test_the_paired_difference_interval_covers_the_true_difference():
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(500):  # a right on 8 % of windows where b is wrong, b on 4 % where a is wrong: true diff 4 points
        u = rng.random(200)
        a, b = ~((u >= 0.08) & (u < 0.12)), ~(u < 0.08)
        t = mcnemar(a, b)
        covered.append(t.diff.low <= 0.04 <= t.diff.high)
        assert t.diff.low <= t.diff.value <= t.diff.high
    assert np.mean(covered) >= 0.95
