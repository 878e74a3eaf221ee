"""Chapter 5 notebook at SCALE=smoke: the search ran every strategy, the budgets held, the frontier and the chosen
models are on disk with cards chapter 6 can load, and the recorded figures follow from the saved tables."""

import pandas as pd
import pytest

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_ch05_search_and_frontier_are_consistent(smoke_run, smoke_run_dir):
    from ersam_lib.experiments.frontier import VERDICTS, FrontierConfig
    from ersam_lib.experiments.search import History

    m = chapter_metrics(smoke_run, "05")
    cfg = FrontierConfig.for_scale("smoke")
    history = History.load(smoke_run_dir / "search" / "history.json")
    assert set(history.df["strategy"]) == set(cfg.strategies) == set(m["hypervolume"])
    assert m["n_evaluations"] == len(history) and m["supernet_cache_misses"] >= 0
    assert all(0.0 <= a <= 1.0 for a in history.df["acc"]) and m["eval_s"] > 0
    assert m["calibration_scale"] == pytest.approx(13.9 / m["mobilenetv2_energy_mj_device"])
    table = pd.read_csv(smoke_run_dir / "search" / "frontier.csv")
    searched, baselines = table[table.kind == "searched"], table[table.kind == "baseline"]
    assert set(baselines["name"]) == set(cfg.baselines) == set(m["baseline_test_acc"])
    assert len(searched) == len(m["finalists"]) >= 1
    for _, r in table.iterrows():  # error = 1 - accuracy; energies calibrated; measured through ExecuTorch
        assert r["error"] == pytest.approx(1 - r["acc"]) and 0.0 <= r["acc"] <= 1.0 and r["mae"] >= 0
        assert r["energy_mj"] == pytest.approx(r["energy_mj_device"] * m["calibration_scale"])
        assert r["cost_source"] == "measured" and r["latency_ms"] == r["measured_executorch_ms"] > 0
    budgets = m["ersam_budgets_mj"]  # quantiles of the scored energies: increasing, each search found a model
    assert len(budgets) == len(cfg.budget_quantiles) and budgets == sorted(budgets)
    assert all(0.0 <= a <= 1.0 for a in m["ersam_budget_best_acc"])
    assert m["default_budget_mj"] in budgets
    for _, r in table.iterrows():  # each test accuracy with its exact interval
        assert r["acc_low"] <= r["acc"] <= r["acc_high"]
    # a baseline is dominated only by the test's verdict, and every baseline has one
    assert set(m["baseline_verdicts"]) == set(m["baselines_dominated"]) == set(cfg.baselines)
    assert set(m["baseline_verdicts"].values()) <= set(VERDICTS)
    assert m["baselines_dominated"] == {n: v == "dominated" for n, v in m["baseline_verdicts"].items()}
    for name, acc in m["peer_real_test_acc"].items():  # the published CountNet models, scored on real speech
        assert name.startswith("CountNet") and 0.0 <= acc <= 1.0 and m["peer_eager_ms"][name] > 0


def test_ch05_hands_chosen_models_to_chapter_6(smoke_run, smoke_run_dir):
    import torch

    from ersam_lib.core.io import read_json
    from ersam_lib.experiments.frontier import load_chosen

    chosen = read_json(smoke_run_dir / "search" / "chosen.json")
    names = [chosen[k] for k in ("budget", "most_accurate") if k in chosen] + chosen["baselines"]
    info = read_json(smoke_run_dir / "data" / "dataset.json")
    for name in names:
        model, card = load_chosen(smoke_run_dir, name)
        assert card.manifest_sha256 == info["manifest_sha256"] and list(card.classes) == info["classes"]
        assert card.file == f"{name}.pt" and card.format == "state_dict" and card.input["kind"] == "logmel"
        x = torch.zeros(2, *card.input["shape"][1:])
        with torch.no_grad():
            assert model(x).shape == (2, len(card.classes))
    with pytest.raises(FileNotFoundError, match="run chapter 05"):
        load_chosen(smoke_run_dir, "no-such-model")
