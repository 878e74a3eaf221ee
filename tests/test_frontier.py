"""Chapter 5's verdicts on the baselines: decided by McNemar's test on the same windows, not by a difference."""

import numpy as np
import pandas as pd

from ersam_lib.experiments.frontier import VERDICTS, dominance


def _right(n_right: int, n: int = 400) -> np.ndarray:
    return np.arange(n) < n_right


def test_dominance_follows_the_paired_test_and_the_energy():
    y = np.zeros(400, np.int64)
    pred = {  # 1 where wrong: accuracy = share of zeros; each model's right windows are a prefix, so they nest
        "f_cheap": np.where(_right(300), 0, 1),  # 75.0 %
        "f_rich": np.where(_right(330), 0, 1),  # 82.5 %
        "b_far": np.where(_right(250), 0, 1),  # 62.5 %: 50 windows only f_rich gets right -> dominated
        "b_close": np.where(_right(296), 0, 1),  # 74.0 %: f_cheap is 1 point ahead on 4 windows -> matched
        "b_ahead": np.where(_right(360), 0, 1),  # 90.0 %: ahead of every finalist at its energy
        "b_tiny": np.where(_right(100), 0, 1),  # cheaper than every finalist
    }
    acc = {n: float(np.mean(p == y)) for n, p in pred.items()}
    energy = {"f_cheap": 1.0, "f_rich": 2.0, "b_far": 3.0, "b_close": 1.5, "b_ahead": 5.0, "b_tiny": 0.5}
    table = pd.DataFrame([{"name": n, "kind": "searched" if n.startswith("f") else "baseline", "acc": acc[n],
                           "energy_mj": energy[n]} for n in pred])
    got = dominance(table, pred, y).set_index("baseline")
    assert got.loc["b_far", "verdict"] == VERDICTS[0] and got.loc["b_far", "finalist"] == "f_rich"
    assert got.loc["b_far", "diff_points_low"] > 0 and got.loc["b_far", "p"] < 0.05
    assert got.loc["b_close", "verdict"] == VERDICTS[1] and got.loc["b_close", "finalist"] == "f_cheap"
    assert got.loc["b_close", "diff_points"] == 1.0 and got.loc["b_close", "diff_points_low"] < 0
    assert got.loc["b_ahead", "verdict"] == VERDICTS[2] and got.loc["b_ahead", "diff_points_high"] < 0
    assert got.loc["b_tiny", "verdict"] == VERDICTS[3] and pd.isna(got.loc["b_tiny", "finalist"])
