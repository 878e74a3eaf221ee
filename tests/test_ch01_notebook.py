"""Chapter 1's notebook at SCALE=smoke: the metrics it recorded describe a sane, balanced, speaker-disjoint set."""

from __future__ import annotations

import pytest

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_ch01_records_a_balanced_speaker_disjoint_data_set(smoke_run):
    m = chapter_metrics(smoke_run, "01")
    assert m["source"] == "tts" and m["class_set"] == "counts"
    assert m["n_classes"] == m["K"] + 1
    # balanced on the label: every split is a whole number of examples per class, no class larger than another
    assert m["class_imbalance"] == 0
    for split in ("train", "val", "test"):
        assert m[f"n_{split}"] > 0 and m[f"n_{split}"] % m["n_classes"] == 0
        assert m[f"speakers_{split}"] >= m["K"]  # enough voices to reach the largest class
    assert m["n_train"] > m["n_val"]
    assert m["speaker_overlap_total"] == 0
    assert len(m["manifest_sha256"]) == 64


def test_ch01_labels_and_overlap_behave_as_the_recipe_says(smoke_run):
    m = chapter_metrics(smoke_run, "01")
    # fill placements keep every drawn speaker active at once; sparse ones often do not
    assert m["agreement_fill"] >= 0.9
    assert m["agreement_sparse"] is None or m["agreement_sparse"] < m["agreement_fill"]
    assert 0.2 < m["overlap_k2"] <= 1.0
    assert m["mixtures_per_s"] is None or m["mixtures_per_s"] > 1


def test_ch01_shortcut_floor_is_a_real_fit(smoke_run):
    m = chapter_metrics(smoke_run, "01")
    assert m["floor_chance"] == pytest.approx(1 / m["n_classes"])
    for split in ("train", "val", "test"):
        assert 0.0 <= m[f"floor_acc_{split}"] <= 1.0
        assert 0.0 <= m[f"floor_mae_{split}"] <= m["K"]
    # the linear fit beats chance on its own training data (it is fitted, not a constant)
    assert m["floor_acc_train"] > m["floor_chance"]


def test_ch01_records_real_splits_beside_the_synthetic_ones(smoke_run):
    m = chapter_metrics(smoke_run, "01")
    real = ("real_val", "real_test", "real_test_other")
    assert m["splits"] == ["train", "val", "test", *real]
    assert m["real_source"] == "librimini" and m["train_sources"] == ["tts"]
    for split in real:
        # balanced over k = 0..K like the synthetic splits, and enough real voices for the largest class
        assert m[f"n_{split}"] > 0 and m[f"n_{split}"] % m["n_classes"] == 0
        assert m[f"speakers_{split}"] >= m["K"]
        assert 0.0 <= m[f"floor_acc_{split}"] <= 1.0 and 0.0 <= m[f"floor_mae_{split}"] <= m["K"]
    assert m["speakers_real_test_other"] <= 10  # the ten test-other speakers
    assert m["speakers_real_val"] + m["speakers_real_test"] > 2 * m["K"]  # many unseen real speakers, not a few
    assert m["speaker_overlap_total"] == 0  # across all six splits
