"""Chapter 1's training sources and real splits: synthetic only, real only, or both in one manifest; speakers
disjoint across all six splits; the real splits the same for every training choice; features and hash cover them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import data_prep as dp
from data_prep.config import ALL_SPLITS, REAL_SPLITS
from data_prep.manifest import make_manifest, manifest_hash, plan_splits
from data_prep.sources import SourceSet, open_sources
from data_prep.stats import speaker_overlap

CHOICES = {"synthetic": ("tts",), "real": ("librimini",), "both": ("tts", "librimini")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERSAM_CACHE", str(tmp_path_factory.mktemp("ersam_cache")))
        mp.delenv("ERSAM_LIBRIMINI", raising=False)
        yield


def tiny(**overrides) -> dp.DataConfig:
    return dp.DataConfig.tiny(**({"real_source": "librimini"} | overrides))


@pytest.fixture(scope="module")
def sources(cache) -> SourceSet:
    return open_sources(tiny())


@pytest.fixture(scope="module")
def manifests(sources) -> dict:
    return {name: make_manifest(tiny(train_sources=t), sources) for name, t in CHOICES.items()}


def _speakers(m, split):
    return set().union(set(), *m.loc[m["split"] == split, "speakers"].map(set))


def test_every_choice_builds_six_speaker_disjoint_balanced_splits(manifests):
    for name, m in manifests.items():
        assert list(dict.fromkeys(m["split"])) == list(ALL_SPLITS), name
        assert sum(speaker_overlap(m).values()) == 0, name
        for split in ALL_SPLITS:
            counts = np.bincount(m.loc[m["split"] == split, "label"], minlength=3)
            assert counts.tolist() == [counts[0]] * 3, (name, split)
        # each row names its source, and its speakers and utterances carry that source's namespace
        for row in m.itertuples():
            assert all(s.startswith(row.source + ":") for s in list(row.speakers) + list(row.utt_ids))
        assert m.example_id.is_unique


def test_training_sources_decide_train_and_val_only(manifests):
    src = {n: {s: sorted(set(m.loc[m["split"] == s, "source"])) for s in ALL_SPLITS} for n, m in manifests.items()}
    assert src["synthetic"]["train"] == ["tts"] and src["real"]["train"] == ["librimini"]
    assert src["both"]["train"] == src["both"]["val"] == ["librimini", "tts"]
    for n in CHOICES:
        assert src[n]["test"] == ["tts"]
        assert all(src[n][s] == ["librimini"] for s in REAL_SPLITS)
    both = manifests["both"]
    train = both[both["split"] == "train"]
    # both sources fill an equal share of every class; the training set keeps its size
    assert (train.groupby(["source", "label"]).size() == 6).all() and len(train) == 36
    assert len(train) == (manifests["synthetic"]["split"] == "train").sum()


def test_real_and_synthetic_test_splits_do_not_depend_on_the_training_choice(manifests):
    cols = ["example_id", "source", "label", "speakers", "utt_ids", "recipe"]
    ref = manifests["synthetic"]
    for name in ("real", "both"):
        for split in REAL_SPLITS + ("test",):
            a = ref.loc[ref["split"] == split, cols].reset_index(drop=True)
            b = manifests[name].loc[manifests[name]["split"] == split, cols].reset_index(drop=True)
            assert a.astype(str).equals(b.astype(str)), (name, split)


def test_real_speakers_never_train_and_evaluation_keeps_30_unseen_speakers(sources):
    plan = plan_splits(tiny(train_sources=("tts", "librimini")), sources)
    real = {s: set(plan[s]["librimini"]) for s in REAL_SPLITS}
    assert len(real["real_val"]) >= 30 and len(real["real_test"]) >= 30
    assert {s.split(":")[1] for s in real["real_test_other"]} == {
        "1688", "1998", "2033", "2414", "2609", "3005", "3080", "3331", "367", "533"}
    trained = set(plan["train"]["librimini"]) | set(plan["val"]["librimini"])
    assert trained and all(not (trained & r) for r in real.values())
    assert not real["real_val"] & real["real_test"]


def test_one_utterance_speakers_are_looped_by_the_fill_placement(manifests):
    m = manifests["synthetic"]
    real_fill = m[(m["source"] == "librimini") & (m["placement"] == "fill") & (m["split"] != "real_test_other")]
    looped = 0
    for recipe in real_fill["recipe"]:
        for track in json.loads(recipe)["tracks"]:
            utts = [seg[0] for seg in track["segments"]]
            assert len(set(utts)) == 1  # one utterance per train-clean-100 speaker
            looped += len(utts) > 1
            ends = [seg[3] + seg[2] for seg in track["segments"]]
            assert ends[-1] == 500  # the loop covers the 5-s segment to its end
    assert looped > 0  # utterances shorter than 5 s repeat back to back


def test_same_seed_same_hash_and_the_hash_covers_the_real_splits(sources, manifests):
    again = make_manifest(tiny(), sources)
    assert manifest_hash(again) == manifest_hash(manifests["synthetic"])
    assert manifest_hash(make_manifest(tiny(seed=1), sources)) != manifest_hash(again)
    fewer = tiny(real_per_class={"real_val": 4, "real_test": 5, "real_test_other": 4})
    assert manifest_hash(make_manifest(fewer, sources)) != manifest_hash(again)
    no_real = make_manifest(tiny(real_source=None), sources.member("tts"))
    assert set(no_real["split"]) == {"train", "val", "test"}


def test_config_rejects_inconsistent_sources():
    with pytest.raises(ValueError, match="train_sources"):
        tiny(train_sources=("librispeech",)).validate()
    with pytest.raises(ValueError, match="train_sources"):
        tiny(real_source=None, train_sources=("tts", "librimini")).validate()
    with pytest.raises(ValueError, match="both 'librimini'"):
        dp.DataConfig(source="librimini", real_source="librimini").validate()
    with pytest.raises(ValueError, match="real_per_class"):
        tiny(real_per_class={"real_holdout": 3}).validate()
    assert dp.DataConfig.for_scale("smoke", source="librimini").real_source is None
    paper = dp.DataConfig.for_scale("paper")
    assert paper.source == "librispeech" and paper.subset_splits["train"] == ["train-clean-360"]
    assert dp.DataConfig.for_scale("smoke", source="librispeech").subset_splits["test"] == ["test-clean"]
    cfg = tiny(train_sources=("tts", "librimini"))
    assert dp.DataConfig.from_json(cfg.to_json()) == cfg


@pytest.fixture(scope="module")
def built(cache, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    dp.build_tiny(run_dir, real_source="librimini", train_sources=("tts", "librimini"))
    return run_dir


def test_features_cover_every_split_standardised_with_train_statistics(built):
    from data_prep.features import feature_splits, load_features
    from ersam_lib.measure.data import load_feature_data

    assert feature_splits(built) == list(ALL_SPLITS)
    info = dp.load_dataset_info(built)
    assert info["splits"] == list(ALL_SPLITS) and info["train_sources"] == ["tts", "librimini"]
    assert info["split_sources"]["real_test"] == ["librimini"] and info["split_sources"]["test"] == ["tts"]
    assert set(info["sources"]) == {"tts", "librimini"} and info["source"]["name"] == "tts"
    assert all(sum(info["counts"][s].values()) == 12 for s in REAL_SPLITS)
    train = np.asarray(load_features(built, "train").x, np.float32)
    assert np.allclose(train.mean(axis=(0, 2)), 0, atol=0.05)  # the statistics are the train split's
    real = load_features(built, "real_test")
    assert real.x.shape[1:] == train.shape[1:] and len(real) == 12
    data = load_feature_data(built)
    assert list(data.extra) == list(REAL_SPLITS) and list(data.splits) == list(ALL_SPLITS)
    assert len(data.train) == 36 and len(data.extra["real_test_other"]) == 12


def test_real_rows_render_from_the_reopened_run_source(built):
    from ersam_lib.measure.data import WaveformDataset

    ds = WaveformDataset(built, "real_test_other")
    wave, label = ds[len(ds) - 1]
    assert wave.shape == (80_000,) and label == int(ds.rows.iloc[-1]["label"]) and float(wave.abs().max()) > 0.4
    m = dp.load_manifest(built)
    row = m[m["split"] == "train"].iloc[-1]
    assert np.array_equal(dp.render_mixture(row, dp.open_run_source(built)),
                          dp.render_mixture(row, dp.open_run_source(built)))


def test_a_run_without_real_splits_says_so(cache, tmp_path):
    from data_prep.features import load_features

    dp.build_tiny(tmp_path)
    with pytest.raises(ValueError, match="no 'real_test' split.*real_source"):
        load_features(tmp_path, "real_test")
