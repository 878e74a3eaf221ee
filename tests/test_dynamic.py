"""Dynamic mixing for chapter 3's teacher: fresh rounds of training mixtures, reused, checked, one per epoch."""

import numpy as np
import pandas as pd
import pytest
import torch

from data_prep.build import load_manifest
from data_prep.dynamic import EpochRounds, build_round, load_round, pool_dir, round_recipes
from data_prep.features import load_features
from ersam_lib.models.teacher import TeacherConfig
from ersam_lib.training.fit import fit_teacher

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from data_prep.build import build_tiny

    run_dir = tmp_path_factory.mktemp("dyn_run")
    build_tiny(run_dir, seed=0)
    return run_dir


def test_a_round_is_a_fresh_training_set_of_the_same_speakers_size_and_balance(tiny_run):
    marker = build_round(tiny_run, 1, workers=1)
    manifest = load_manifest(tiny_run)
    train = manifest[manifest["split"] == "train"]
    recipes = pd.read_parquet(pool_dir(tiny_run) / "round_1.parquet")
    assert marker["n"] == len(recipes) == len(train) and not marker["reused"]
    assert sorted(recipes["label"]) == sorted(train["label"])  # the same class balance
    assert set(s for row in recipes["speakers"] for s in row) <= set(s for row in train["speakers"] for s in row)
    assert not set(recipes["recipe"]) & set(manifest["recipe"])  # new mixtures, none of chapter 1's
    x, y = load_round(tiny_run, 1)
    ref = load_features(tiny_run, "train")
    assert x.shape == ref.x.shape and x.dtype == ref.x.dtype and list(y) == list(recipes["label"])
    assert abs(float(np.asarray(x, np.float32).mean())) < 1.0  # standardised with the training statistics
    assert round_recipes(tiny_run, 1)["recipe"].tolist() == recipes["recipe"].tolist()  # deterministic
    assert round_recipes(tiny_run, 2)["recipe"].tolist() != recipes["recipe"].tolist()


def test_a_round_is_reused_when_intact_and_rebuilt_when_damaged(tiny_run):
    build_round(tiny_run, 1, workers=1)
    assert build_round(tiny_run, 1, workers=1)["reused"]
    path = pool_dir(tiny_run) / "round_1.npy"
    before = path.read_bytes()
    path.write_bytes(before[:-8])
    with pytest.raises(Exception, match="--only 03"):
        load_round(tiny_run, 1)
    assert not build_round(tiny_run, 1, workers=1)["reused"] and path.read_bytes() == before
    with pytest.raises(ValueError, match="round 0"):
        build_round(tiny_run, 0)


def test_epoch_rounds_switch_sets_and_the_teacher_trains_on_them(tiny_run):
    build_round(tiny_run, 1, workers=1)
    ds = EpochRounds(tiny_run, 1)
    train, (x1, _) = load_features(tiny_run, "train"), load_round(tiny_run, 1)
    assert torch.equal(ds[0][0], torch.from_numpy(np.asarray(train.x[0], np.float32)))
    ds.set_epoch(1)
    assert torch.equal(ds[0][0], torch.from_numpy(np.asarray(x1[0], np.float32)))
    ds.set_epoch(2)
    assert torch.equal(ds[0][0], torch.from_numpy(np.asarray(train.x[0], np.float32)))
    info = fit_teacher(tiny_run, TeacherConfig(epochs=2, batch_size=8, channels=(4, 8, 8), hidden=8, mix_rounds=1))
    assert info["mix_rounds"] == 1 and info["mix_reused"] and len(info["history"]) == 2
    assert info["distinct_train_samples"] == 2 * info["train_samples"]
    with pytest.raises(ValueError, match="mix_rounds"):
        TeacherConfig(mix_rounds=-1)


def test_rounds_from_some_training_sources_only(tmp_path):
    """``mix_sources``: extra rounds drawn from the named training sources alone, in their own pool folder."""
    from data_prep.build import build_tiny

    run_dir = tmp_path / "run"
    build_tiny(run_dir, seed=0, real_source="librimini", train_sources=("tts", "librimini"))
    train = load_manifest(run_dir).query("split == 'train'")
    real = build_round(run_dir, 1, workers=1, mix_sources=("librimini",))
    recipes = pd.read_parquet(pool_dir(run_dir, ("librimini",)) / "round_1.parquet")
    assert real["n"] == len(recipes) == len(train) and sorted(recipes["label"]) == sorted(train["label"])
    assert set(recipes["source"]) == {"librimini"} and set(train["source"]) == {"tts", "librimini"}
    assert not (pool_dir(run_dir) / "round_1.json").exists()  # the all-sources pool is untouched
    both = build_round(run_dir, 1, workers=1)
    assert both["key"] != real["key"] and set(pd.read_parquet(pool_dir(run_dir) / "round_1.parquet")["source"]) \
        == {"tts", "librimini"}
    x, _ = load_round(run_dir, 1, ("librimini",))
    assert len(EpochRounds(run_dir, 1, ("librimini",)).sets) == 2 and x.shape[0] == len(train)
    with pytest.raises(ValueError, match="training split's sources are"):
        round_recipes(run_dir, 2, mix_sources=("librispeech",))
    with pytest.raises(ValueError, match="mix_rounds >= 1"):
        TeacherConfig(mix_sources=("librimini",))
    assert TeacherConfig(mix_rounds=1, mix_sources="librimini").mix_sources == ("librimini",)
    assert TeacherConfig(mix_rounds=1, mix_sources=["tts", "librimini"]).mix_sources == ("tts", "librimini")
