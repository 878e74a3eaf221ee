"""Chapter 2's notebook at SCALE=smoke: what it recorded and the files it hands to later chapters."""

import pytest

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_ch02_measured_grid_rule_and_validation(smoke_run):
    m = chapter_metrics(smoke_run, "02")
    assert m["grid_points"] >= 20 and m["conv_blowup_ratio"] > 1.5  # latency grows over the grid
    assert 0.0 < m["rule_allowed_share"] <= 1.0 and m["rule_max_op_ms"] > 0
    assert all(b > 0 for b in m["rule_exponents"])  # more channels / kernel / length never costs less
    assert m["lut_entries"] > 20 and m["n_train_archs"] >= 3 and m["statistic"] == "min"
    assert m["val_n"] >= 3 and 0.0 <= m["val_within10"] <= 1.0 and -1.0 <= m["val_spearman"] <= 1.0
    assert 0.0 < m["val_mape"] < 5.0 and m["val_max_abs_err"] >= m["val_median_abs_err"]
    assert m["first_call_over_median"] > 0
    assert m["imported_lookup_matches"] and m["reloaded_prediction_matches"]
    # The deployed runtime's model: validated on held-out architectures measured through ExecuTorch.
    assert m["executorch_val_n"] >= 3 and 0.0 <= m["executorch_val_within10"] <= 1.0
    assert -1.0 <= m["executorch_val_spearman"] <= 1.0 and -1.0 <= m["executorch_eager_rank"] <= 1.0
    for backends in m["backend_median_ms"].values():
        assert set(backends) == {"eager", "executorch", "onnxruntime"} and min(backends.values()) > 0
    # Energy is latency x power: bigger networks cost more, the 12-h average is energy / 5 s.
    e, p = m["baselines_energy_mj"], m["baselines_avg_power_mw_12h"]
    assert e["countnet_crnn"] > e["countnet_fcrnn"] > 0
    assert all(p[k] == pytest.approx(e[k] / 5.0, rel=1e-3) for k in e)


def test_ch02_hands_rule_and_cost_model_to_later_chapters(smoke_run_dir):
    import torch

    from ersam_lib.measure.costmodel import CostModel
    from ersam_lib.measure.costrule import CostRule
    from ersam_lib.models.baselines import build_baseline

    rule = CostRule.load(smoke_run_dir / "profiling" / "rule.json")
    assert rule.allows(16, 3, 10) and rule.n_points >= 4
    cm = CostModel.load(smoke_run_dir)
    torch.set_num_threads(1)
    est = cm.predict(build_baseline("tcresnet8", 32, 4), (1, 32, 126))
    assert est.latency_ms > 0 and est.params > 60_000 and est.lut_coverage == 1.0
    et = CostModel.load(smoke_run_dir, runtime="executorch")  # same LUT, a correction fitted to ExecuTorch
    assert et.lut.entries == cm.lut.entries
    assert et.predict(build_baseline("tcresnet8", 32, 4), (1, 32, 126)).latency_ms > 0
