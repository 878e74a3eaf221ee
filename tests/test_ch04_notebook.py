"""Chapter 4 notebook at SCALE=smoke: the ablation table it recorded is complete and self-consistent."""

import pytest

from ersam_lib.experiments.ablation import SUBNETS
from ersam_lib.measure.uncertainty import UNDECIDED

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_ch04_ablation_is_consistent(smoke_run, smoke_run_dir):
    m = chapter_metrics(smoke_run, "04")
    variants = m["variants"]
    assert variants[:3] == ["none", "full", "offline"] and any(v.startswith("selective") for v in variants)
    assert m["query_rate"]["none"] == 0.0 and m["query_rate"]["full"] == 1.0
    assert m["teacher_samples"]["none"] == 0 and m["teacher_samples"]["full"] > 0
    for v in variants:
        for size in ("smallest", "middle", "largest"):
            assert 0.0 <= m[f"acc_{size}"][v] <= 1.0
        assert 0.0 <= m["query_rate"][v] <= 1.0 and m["wall_s"][v] > 0
        if v.startswith("selective"):  # never more queries than full distillation
            assert m["teacher_samples"][v] <= m["teacher_samples"]["full"]
    assert m["final_variant"] in variants and m["final_query_rate"] == m["query_rate"][m["final_variant"]]
    assert m["final_minus_full_acc_largest"] == pytest.approx(
        m["acc_largest"][m["final_variant"]] - m["acc_largest"]["full"])
    assert m["total_train_s"] == pytest.approx(sum(m["wall_s"].values()))
    # offline: full distillation's targets, one teacher pass per training sample whatever the epochs
    assert 0 < m["teacher_samples"]["offline"] < m["teacher_samples"]["full"]
    assert m["query_rate"]["offline"] == pytest.approx(m["teacher_samples"]["offline"] / m["teacher_samples"]["full"])
    checked = [v for v in variants if v.startswith("selective")] + ["offline"]
    assert sorted(m["claim_holds"]) == sorted(checked)
    for v in checked:  # the recorded verdict follows from the recorded numbers
        gaps = [m[f"acc_{s}"][v] - m[f"acc_{s}"]["full"] for s in ("smallest", "middle", "largest")]
        assert m["claim_holds"][v] == (m["query_rate"][v] <= 0.3 and min(gaps) >= -0.01)
    # the paired tests: full against none on the same validation windows, and the claim decided by a test
    for size in SUBNETS:
        assert m["full_minus_none"][size] == pytest.approx(m[f"acc_{size}"]["full"] - m[f"acc_{size}"]["none"])
        assert (m["full_vs_none_verdict"][size] == UNDECIDED) == (m["full_vs_none_p"][size] >= 0.05)
    assert sorted(m["claim_verdict"]) == sorted(checked)
    assert set(m["claim_verdict"].values()) <= {"holds", "fails", UNDECIDED}
    for v in checked:  # shown within a point by the test implies within a point by difference
        assert m["claim_verdict"][v] != "holds" or m["claim_holds"][v]
    assert m["space_size"] > 1 and m["supernet_params"] > 0 and 0 <= m["smallest_errors_teacher_right"] <= 1
    final = m["final_scores"]  # the saved supernet's subnets on the synthetic and the real test mixtures
    for split in ("test", "real_test", "real_test_other"):
        for size in ("smallest", "middle", "largest"):
            assert 0.0 <= final[f"{split}_acc_{size}"] <= 1.0 and final[f"{split}_mae_{size}"] >= 0.0


def test_ch04_leaves_a_supernet_for_chapter_5(smoke_run_dir):
    import pandas as pd

    from ersam_lib.models.supernet import load_supernet

    net, space, info = load_supernet(smoke_run_dir)
    assert space.contains(space.largest()) and info["variant"].startswith("selective")
    table = pd.read_csv(smoke_run_dir / "supernet" / "ablation.csv")
    assert info["variant"] in set(table["variant"])
