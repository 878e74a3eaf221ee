"""Chapter 6 notebook at SCALE=smoke: the programs and cards are on disk, the recorded figures follow from the saved
tables (precision.csv, programs.csv, the cards, party_eval.json), and the deployed program runs in the meter."""

import json

import pandas as pd
import pytest

from ersam_lib.measure.uncertainty import UNDECIDED

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_ch06_accuracy_and_costs_follow_from_saved_files(smoke_run, smoke_run_dir):
    m = chapter_metrics(smoke_run, "06")
    deploy = smoke_run_dir / "deploy"
    precision = pd.read_csv(deploy / "precision.csv")
    chosen = json.loads((smoke_run_dir / "search" / "chosen.json").read_text())
    # chapter 6 deploys chapter 5's budget model, or its most accurate one where no finalist measured within budget
    assert chosen[m["model_role"]] == m["model"]
    assert m["model_role"] == "budget" or "budget" not in chosen
    assert set(precision["model"]) == set(m["models"]) >= {m["model"], *chosen["baselines"]}
    for split in ("test", "real_test"):
        rows = precision[precision.split == split].set_index("model")
        assert m[f"float_{split}_acc"] == pytest.approx(rows["float_acc"].to_dict())
        assert m[f"int8_{split}_acc"] == pytest.approx(rows["int8_acc"].to_dict())
        name = m["model"]
        drop = 100 * (rows.loc[name, "float_acc"] - rows.loc[name, "int8_acc"])
        assert m[f"int8_{split}_drop_points"] == pytest.approx(drop)
        # the verdict on int8 is McNemar's on the split's windows, recorded with its p-value
        assert m[f"int8_{split}_verdict"] == rows.loc[name, "int8_verdict"]
        assert m[f"int8_{split}_mcnemar_p"] == pytest.approx(rows.loc[name, "int8_p"])
        assert (m[f"int8_{split}_verdict"] == UNDECIDED) == (m[f"int8_{split}_mcnemar_p"] >= 0.05)
    programs = pd.read_csv(deploy / "programs.csv").set_index(["runtime", "precision"])
    for (runtime, precision_), row in programs.iterrows():
        path = deploy / row["program"]
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["kind"] == "ersam-model-card" and card["precision"] == precision_ and card["file"] == path.name
        assert card["input"]["kind"] == "audio" and card["features"]["kind"] == "logmel" and card["normalizes"]
        assert card["costs"]["size_kb"] == pytest.approx(path.stat().st_size / 1000) == row["size_kb"]
        assert card["costs"]["latency_ms"] == pytest.approx(m["latency_ms"][f"{runtime}_{precision_}"])
        assert card["manifest_sha256"] == json.loads((smoke_run_dir / "data" / "dataset.json").read_text())[
            "manifest_sha256"]
        assert set(card["metrics"]) >= {"float_test_acc", "int8_test_acc"} and card["architecture"]
    et = programs.loc["executorch"]
    assert m["executorch_int8_float_ratio"] == pytest.approx(et.loc["int8", "latency_ms"] / et.loc["float",
                                                                                                  "latency_ms"])
    assert m["executorch_float_ms"] > 0 and m["executorch_int8_ms"] > 0
    # the cost breakdown: the front end and the network, each exported alone and measured
    assert m["frontend_size_share_int8"] == pytest.approx(m["frontend_program_kb"] / m["size_kb"]["executorch_int8"])
    assert 0 < m["frontend_latency_share_int8"] and m["frontend_macs"] > 0 and m["network_macs"] > 0
    assert 0 < m["network_int8_weights_kb"] < m["network_int8_program_kb"] + m["frontend_program_kb"]


def test_ch06_party_evaluation_and_meter(smoke_run, smoke_run_dir):
    from ersam_lib.experiments.meter import count, load_counter

    m = chapter_metrics(smoke_run, "06")
    deploy = smoke_run_dir / "deploy"
    report = json.loads((deploy / "party_eval.json").read_text())
    assert report["program"] == m["meter_program"] and report["split"] == m["party_split"] == "real_test"
    assert m["rttm_accuracy"] == pytest.approx(report["counts"]["accuracy"])
    assert m["rttm_mae"] == pytest.approx(report["counts"]["mae"])
    assert m["rttm_level_accuracy"] == pytest.approx(report["levels"]["accuracy"])
    assert m["rttm_windows"] == report["counts"]["n"] == m["party_duration_s"] // 5
    assert m["meter_speed_x"] == pytest.approx(1 / m["meter_rtf"]) and m["meter_speed_x"] > 1
    assert m["meter_onnx_speed_x"] > 1
    df = count(deploy / "party" / "party.wav", load_counter(deploy / m["meter_program"]), tail="drop")
    assert len(df) == m["rttm_windows"]


def test_ch06_leaves_the_runs_headline_for_the_book(smoke_run, smoke_run_dir):
    """Issue 31: the headline the book shows is a typed hand-off chapter 6 writes, equal to what it recorded."""
    from ersam_lib.core.cards import Headline

    m = chapter_metrics(smoke_run, "06")
    h = Headline.load(smoke_run_dir)
    assert (h.model, h.role) == (m["model"], m["model_role"])
    assert h.int8_test_acc == m["int8_test_acc"][h.model] and h.latency_ms == m["executorch_int8_ms"]
    assert h.meter_speed_x == m["meter_speed_x"] and h.rttm_accuracy == m["rttm_accuracy"]
