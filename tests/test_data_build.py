"""Chapter 1: the build end to end on tiny data: manifest, splits, balance, determinism, features, rendering."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import data_prep as dp
from data_prep.features import compute_features, load_features
from data_prep.manifest import make_manifest, manifest_hash
from data_prep.sources import SourceError, open_source
from data_prep.vad import from_runs


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ersam_cache")
        mp.setenv("ERSAM_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def tiny_run(cache, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    report = dp.build_tiny(run_dir)
    return run_dir, report


def test_build_writes_the_contract(tiny_run):
    run_dir, report = tiny_run
    data = run_dir / "data"
    for name in ("manifest.parquet", "manifest.sha256", "dataset.json", "features/logmel/meta.json"):
        assert (data / name).exists(), name
    info = dp.load_dataset_info(run_dir)
    assert info["classes"] == ["0", "1", "2"] and info["K"] == 2 and info["class_set"] == "counts"
    assert info["sample_rate"] == 16000 and info["source"]["name"] == "tts"
    assert info["counts"] == {"train": {"0": 12, "1": 12, "2": 12}, "val": {"0": 4, "1": 4, "2": 4},
                              "test": {"0": 4, "1": 4, "2": 4}}
    assert sum(info["speakers"].values()) == 12
    assert (data / "manifest.sha256").read_text().split()[0] == info["manifest_sha256"]
    assert not [p for p in data.rglob("*") if p.name.startswith(".")]  # no temp files or parts left
    assert report.n_mixtures == 60 and report.mixtures_per_s > 0


def test_splits_are_speaker_disjoint_and_labels_match_activity(tiny_run):
    run_dir, _ = tiny_run
    m = dp.load_manifest(run_dir)
    speakers = {s: set().union(*m.loc[m.split == s, "speakers"].map(set)) for s in ("train", "val", "test")}
    assert not speakers["train"] & speakers["val"] and not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    for row in m.itertuples():
        act = np.stack([from_runs(r, 500) for r in json.loads(row.activity)]) if row.n_drawn else np.zeros((0, 500))
        assert row.count == (int(act.sum(axis=0).max()) if row.n_drawn else 0)
        assert row.label == row.count and row.count <= row.n_drawn
        assert (row.placement == "none") == (row.n_drawn == 0)
        assert len(row.speakers) == row.n_drawn == len(row.gains_db) == len(row.offsets)


def test_same_seed_same_manifest_hash(tiny_run, cache):
    run_dir, _ = tiny_run
    cfg = dp.DataConfig.tiny()
    src = open_source(cfg)  # the cached corpus
    again = make_manifest(cfg, src)
    assert manifest_hash(again) == dp.load_dataset_info(run_dir)["manifest_sha256"]
    other = make_manifest(dataclasses.replace(cfg, seed=1), src)
    assert manifest_hash(other) != manifest_hash(again)


def test_features_are_standardised_and_load_as_documented(tiny_run):
    run_dir, _ = tiny_run
    train = load_features(run_dir, "train")
    assert train.x.dtype == np.float16 and train.x.shape == (36, 16, 101) and train.y.dtype == np.int64
    assert train.classes == ["0", "1", "2"] and np.bincount(train.y).tolist() == [12, 12, 12]
    x = np.asarray(train.x, np.float64)
    assert np.allclose(x.mean(axis=(0, 2)), 0, atol=1e-2) and np.allclose(x.std(axis=(0, 2)), 1, atol=1e-2)
    test = load_features(run_dir, "test")
    assert test.x.shape == (12, 16, 101) and np.isfinite(np.asarray(test.x, np.float32)).all()
    item, label = dp.FeatureDataset(test)[3]
    assert item.dtype.is_floating_point and tuple(item.shape) == (16, 101) and isinstance(label, int)
    with pytest.raises(FileNotFoundError, match="add_features"):
        load_features(run_dir, "train", kind="stft")
    with pytest.raises(ValueError, match="split"):
        load_features(run_dir, "dev")


def test_features_match_torchaudio_and_rendering_is_deterministic(tiny_run):
    import torch
    import torchaudio

    run_dir, _ = tiny_run
    m, src = dp.load_manifest(run_dir), dp.open_run_source(run_dir)
    row = m[m["count"] == 2].iloc[0]
    a, b = dp.render_mixture(row, src), dp.render_mixture(row.to_dict(), src)
    assert a.dtype == np.float32 and a.shape == (80000,) and np.array_equal(a, b)
    recipe = json.loads(row["recipe"])
    assert np.abs(a).max() == pytest.approx(10 ** (recipe["peak_dbfs"] / 20), rel=1e-4)
    cfg = dp.DataConfig.tiny().features
    ours = compute_features(a, "logmel", cfg)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=cfg.n_fft, win_length=cfg.win_length,
                                               hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    ref = torch.log(mel(torch.from_numpy(a)) + 1e-6).numpy()
    assert ours.shape == ref.shape and np.allclose(ours, ref, atol=1e-3)
    stft = compute_features(a, "stft", cfg)
    ref = torch.stft(torch.from_numpy(a), 400, 160, window=torch.hann_window(400), return_complex=True).abs().numpy()
    assert stft.shape == (201, 501) and np.allclose(stft, ref, atol=1e-3)
    # the cached features are these features, standardised
    meta = load_features(run_dir, "train").meta
    i = int(np.flatnonzero((m["split"] == row["split"]).to_numpy()).tolist().index(row.name))
    cached = np.asarray(load_features(run_dir, row["split"]).x[i], np.float32)
    expect = (ours - np.array(meta["mean"])[:, None]) / np.array(meta["std"])[:, None]
    assert np.allclose(cached, expect, atol=2e-2)


def test_rebuild_resumes_and_stft_on_request(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "data" / "features" / "logmel" / "train.npy").stat().st_mtime_ns
    report = dp.build_tiny(run_dir)
    assert report.reused_manifest and report.render_s == 0.0
    assert (run_dir / "data" / "features" / "logmel" / "train.npy").stat().st_mtime_ns == before
    dp.add_features(run_dir, ("stft",))
    st = load_features(run_dir, "val", kind="stft")
    assert st.x.shape == (12, 201, 501) and np.array_equal(st.y, load_features(run_dir, "val").y)


def test_feature_build_resumes_after_a_kill(cache, tmp_path, monkeypatch):
    import data_prep.features as features

    real, calls = features._render_shard, []

    def die_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated kill")
        return real(*args)

    monkeypatch.setattr(features, "_render_shard", die_on_second)
    cfg = dp.DataConfig.tiny(shard_size=16)
    with pytest.raises(RuntimeError, match="simulated kill"):
        dp.build(cfg, tmp_path)
    parts = tmp_path / "data" / "features" / "logmel" / ".parts"
    assert len(list(parts.glob("*.npy"))) == 1 and not (tmp_path / "data" / "dataset.json").exists()
    calls.clear()
    monkeypatch.setattr(features, "_render_shard", lambda *args: calls.append(1) or real(*args))
    report = dp.build(cfg, tmp_path)
    assert report.reused_manifest and len(calls) == 3  # 60 rows in shards of 16: 4 shards, 1 already done
    assert load_features(tmp_path, "train").x.shape[0] == 36


def test_levels_class_set_and_sparse_labels(cache, tmp_path):
    cfg = dp.DataConfig.tiny(class_set="levels", max_count=4, sparse_fraction=1.0,
                             per_class={"train": 4, "val": 2, "test": 2},
                             tts=dp.TtsConfig(n_speakers=28, utts_per_speaker=2, min_words=6, max_words=10))
    m = make_manifest(cfg, open_source(cfg))
    assert m.groupby("split")["label"].apply(lambda s: np.bincount(s, minlength=4).tolist()).to_dict() == {
        "test": [2, 2, 2, 2], "train": [4, 4, 4, 4], "val": [2, 2, 2, 2]}
    speech = m[m.n_drawn > 0]
    assert (speech.placement == "sparse").all() and (speech["count"] <= speech.n_drawn).all()


def test_bad_input_leaves_nothing_written(cache, tmp_path):
    with pytest.raises(SourceError, match="too few speakers for K=2"):
        dp.build(dp.DataConfig.tiny(tts=dp.TtsConfig(n_speakers=6, utts_per_speaker=2)), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(SourceError, match="does not exist"):
        dp.build(dp.DataConfig.tiny(source="folder", root=str(tmp_path / "nope")), tmp_path / "b")
    with pytest.raises(SourceError, match="needs a root"):
        dp.build(dp.DataConfig.tiny(source="librispeech"), tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="class_set"):
        dp.build(dp.DataConfig.tiny(class_set="bins"), tmp_path / "c")
    with pytest.raises(ValueError, match="SCALE"):
        dp.DataConfig.for_scale("huge")


def test_cli_builds_from_a_speaker_folder(cache, tmp_path, capsys):
    import soundfile as sf

    from data_prep.cli import main
    from data_prep.sources import TtsSource, synthesize_corpus

    tts = TtsSource(synthesize_corpus(dp.TtsConfig(n_speakers=12, utts_per_speaker=2, min_words=6, max_words=9)))
    for utt, spk in zip(tts.index()["utt_id"], tts.index()["speaker"]):
        (tmp_path / "voices" / spk).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "voices" / spk / f"{utt}.wav", tts.load(utt), 16000)
    (tmp_path / "voices" / spk / "broken.wav").write_bytes(b"RIFF....WAVE")
    rc = main(["build", "--source", "folder", "--root", str(tmp_path / "voices"), "--out", str(tmp_path / "run"),
               "--scale", "smoke", "--max-count", "2", "--workers", "1"])
    assert rc == 0 and "mixtures_per_s" in capsys.readouterr().out
    info = dp.load_dataset_info(tmp_path / "run")
    assert info["source"]["name"] == "folder" and len(info["source"]["skipped"]) == 1
    assert load_features(tmp_path / "run", "val").x.shape[0] == 30
    rc = main(["build", "--source", "folder", "--root", str(tmp_path / "voices"), "--out", str(tmp_path / "run2"),
               "--scale", "smoke", "--on-error", "raise"])
    assert rc == 2 and "broken.wav" in capsys.readouterr().err and not (tmp_path / "run2").exists()


def test_stats_and_shortcut_floor(tiny_run):
    from data_prep import stats
    from data_prep.floor import band_stats, shortcut_floor

    run_dir, _ = tiny_run
    m = dp.load_manifest(run_dir)
    assert stats.speaker_overlap(m) == {"train&val": 0, "train&test": 0, "val&test": 0}
    assert stats.class_counts(m).to_numpy().tolist() == [[12, 4, 4]] * 3
    ov = stats.overlap_by_count(m)
    assert ov.loc[0, "overlap_mean"] == 0 and ov.loc[1, "overlap_mean"] == 0 and 0 < ov.loc[2, "overlap_mean"] <= 1
    agree = stats.label_agreement(m)
    assert set(agree.index) <= {"fill", "sparse"} and agree["k_equals_drawn"].between(0, 1).all()
    assert band_stats(np.ones((2, 3, 5))).shape == (2, 6)
    floor = shortcut_floor(run_dir)
    assert floor["chance"] == pytest.approx(1 / 3)
    for split in ("train", "val", "test"):
        assert 0 <= floor[f"acc_{split}"] <= 1 and 0 <= floor[f"mae_{split}"] <= 2
    assert floor["acc_train"] >= floor["chance"]  # a fitted linear model beats chance on its own training data


def test_reverb_and_background_are_deterministic_options(tiny_run):
    from data_prep.render import background, reverberate

    run_dir, _ = tiny_run
    m, src = dp.load_manifest(run_dir), dp.open_run_source(run_dir)
    row = m[m["count"] == 1].iloc[0].to_dict()
    recipe = json.loads(row["recipe"])
    recipe["tracks"][0]["rt60"] = 0.5
    wet_row = row | {"recipe": json.dumps(recipe)}
    dry, wet = dp.render_mixture(row, src), dp.render_mixture(wet_row, src)
    assert np.array_equal(wet, dp.render_mixture(wet_row, src)) and not np.allclose(dry, wet)
    # a 0.5-s tail: energy keeps flowing after an impulse, decaying by ~60 dB over rt60
    impulse = np.zeros(16000, np.float32)
    impulse[0] = 1.0
    tail = reverberate(impulse, 0.5, np.random.default_rng(0))
    early, late = np.sum(tail[:800] ** 2), np.sum(tail[7200:8000] ** 2)
    assert 10 * np.log10(early / late) > 30
    bg = background(80000, seed=3)
    assert np.array_equal(bg, background(80000, seed=3)) and np.sqrt(np.mean(bg**2)) == pytest.approx(1, rel=1e-3)
    k0 = m[m["count"] == 0].iloc[0]
    assert np.abs(dp.render_mixture(k0, src)).max() > 0  # k = 0 is background, not silence


def _rows_differ(a, b) -> int:
    xa, xb = (np.asarray(load_features(r, "train").x, np.float32) for r in (a, b))
    return int((np.abs(xa - xb).reshape(len(xa), -1).max(axis=1) > 1e-3).sum())


def test_interrupted_build_then_another_seed_never_mixes_features(cache, tmp_path, monkeypatch):
    import data_prep.features as features

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill after every shard was rendered")

    with monkeypatch.context() as m:
        m.setattr(features, "_finalize", killed)
        with pytest.raises(KeyboardInterrupt):
            dp.build(dp.DataConfig.tiny(shard_size=16, seed=0), tmp_path / "run")
    assert len(list((tmp_path / "run/data/features/logmel/.parts").glob("*.npy"))) == 4  # seed 0's shards
    dp.build(dp.DataConfig.tiny(shard_size=16, seed=1), tmp_path / "run")
    dp.build(dp.DataConfig.tiny(shard_size=16, seed=1), tmp_path / "fresh")
    assert _rows_differ(tmp_path / "run", tmp_path / "fresh") == 0
    assert np.array_equal(load_features(tmp_path / "run", "train").y, load_features(tmp_path / "fresh", "train").y)


def test_changing_the_front_end_rebuilds_the_features(cache, tmp_path):
    dp.build(dp.DataConfig.tiny(features=dp.FeatureConfig(n_mels=32, hop_length=800)), tmp_path)
    report = dp.build(dp.DataConfig.tiny(), tmp_path)  # only n_mels changed: same manifest, new features
    assert report.render_s > 0
    info = dp.load_dataset_info(tmp_path)
    assert load_features(tmp_path, "train").x.shape[1] == info["config"]["features"]["n_mels"] == 16


def test_damaged_arrays_are_named_and_a_rebuild_repairs_them(tiny_run, tmp_path):
    import shutil

    from ersam_lib.core.io import ArtifactError

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    folder = run / "data" / "features" / "logmel"
    x = np.load(folder / "train.npy", mmap_mode="r+")
    x[:] = 0  # zeroed, header intact: the right shape, the wrong content
    x.flush()
    del x
    with pytest.raises(ArtifactError, match=r"train\.npy does not match the SHA-256 .* --only 01$"):
        load_features(run, "train")
    (folder / "val_y.npy").write_bytes((folder / "val_y.npy").read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"val_y\.npy is not a readable NumPy array"):
        load_features(run, "val")
    report = dp.build_tiny(run)  # chapter 1 again: the manifest is reused, the damaged features are rebuilt
    assert report.reused_manifest and report.render_s > 0
    assert _rows_differ(run, tiny_run[0]) == 0 and load_features(run, "val").y.shape == (12,)


def test_damaged_records_are_named_and_a_rebuild_repairs_them(tiny_run, tmp_path):
    import shutil

    from ersam_lib.core.io import ArtifactError

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    data = run / "data"
    (data / "dataset.json").write_text('{"classes": [')
    (data / "features/logmel/meta.json").write_text('{"kind": "log')
    (data / "manifest.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ArtifactError, match=r"dataset\.json is not valid JSON .*--only 01$"):
        load_features(run, "train")
    report = dp.build_tiny(run)
    assert not report.reused_manifest and report.render_s > 0  # both were rebuilt, not trusted
    assert dp.load_manifest(run).equals(dp.load_manifest(tiny_run[0]))
    assert _rows_differ(run, tiny_run[0]) == 0


def test_a_stale_record_is_refused(tiny_run, tmp_path):
    import shutil

    from ersam_lib.core.io import ArtifactError, atomic_write_json

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    info = dp.load_dataset_info(run)
    atomic_write_json(run / "data/dataset.json", info | {"manifest_sha256": "0" * 64})
    with pytest.raises(ArtifactError, match=r"meta\.json was made from other data than the run holds now"):
        load_features(run, "train")
    with pytest.raises(ArtifactError, match=r"manifest\.parquet does not match"):
        dp.load_manifest(run)
    atomic_write_json(run / "data/dataset.json", info | {"source_fingerprint": info["source_fingerprint"]
                                                         | {"audio_sha256": "f" * 64}})
    with pytest.raises(ArtifactError, match="speech that has changed"):
        dp.open_run_source(run)


def test_a_silent_speaker_is_skipped_and_named_or_refused(cache, tmp_path):
    import soundfile as sf

    from data_prep.sources import TtsSource, synthesize_corpus

    tts = TtsSource(synthesize_corpus(dp.TtsConfig(n_speakers=12, utts_per_speaker=2, min_words=6, max_words=9)))
    voices = tmp_path / "voices"
    for utt, spk in zip(tts.index()["utt_id"], tts.index()["speaker"]):
        (voices / spk).mkdir(parents=True, exist_ok=True)
        sf.write(voices / spk / f"{utt}.wav", tts.load(utt), 16000)
    (voices / "quiet").mkdir()
    sf.write(voices / "quiet" / "silence.wav", np.zeros(32000, np.float32), 16000)
    cfg = dp.DataConfig.tiny(source="folder", root=str(voices), seed=3)
    dp.build(cfg, tmp_path / "run")
    skipped = dp.load_dataset_info(tmp_path / "run")["source"]["skipped"]
    assert [s["path"] for s in skipped] == [str(voices / "quiet" / "silence.wav")]  # drawn, left out, named
    with pytest.raises(SourceError, match=r"quiet/silence\.wav"):
        make_manifest(dataclasses.replace(cfg, on_error="raise"), open_source(cfg))


def test_cli_refuses_impossible_values(tmp_path, capsys):
    from data_prep.cli import main

    for args in (["--features", ","], ["--features", "mfcc"], ["--workers", "0"], ["--seed", "-1"],
                 ["--max-count", "0"]):
        with pytest.raises(SystemExit) as info:
            main(["build", "--out", str(tmp_path / "run"), "--scale", "smoke", *args])
        assert info.value.code == 2 and args[0] in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["build", "--out", str(tmp_path / "afile"), "--scale", "smoke"]) == 2
    assert "is a file" in capsys.readouterr().err and not (tmp_path / "run").exists()


_BUILD = "import sys, data_prep as dp; dp.build_tiny(sys.argv[1], seed=int(sys.argv[2]))"


def test_two_builds_into_one_folder_take_turns(cache, tmp_path):
    """Issue 30, item 4: a build waits (and says so) while another holds the folder, and two builds of other seeds
    started together both succeed and leave one build's manifest, record and features, never a mix."""
    import os
    import subprocess
    import sys
    import time

    from ersam_lib.core.io import file_lock, read_json

    env = {**os.environ, "ERSAM_PROGRESS": "0"}
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    with file_lock(run / "data"):
        waiting = subprocess.Popen([sys.executable, "-c", _BUILD, str(run), "1"], env=env, stderr=subprocess.PIPE,
                                   text=True)
        time.sleep(20)  # long enough for a tiny build (a few seconds) to have finished, were it not waiting
        assert waiting.poll() is None and not (run / "data" / "dataset.json").exists()
    assert waiting.wait(timeout=300) == 0 and "another build is writing" in waiting.stderr.read()
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(run), seed], env=env, stderr=subprocess.PIPE)
             for seed in ("2", "3")]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    dataset, config = read_json(run / "data" / "dataset.json"), read_json(run / "data" / "config.json")
    meta = read_json(run / "data" / "features" / "logmel" / "meta.json")
    assert dataset["config"]["seed"] == config["config"]["seed"] in (2, 3)
    assert dataset["manifest_sha256"] == config["manifest_sha256"] == meta["manifest_sha256"]
    assert manifest_hash(dp.load_manifest(run)) == dataset["manifest_sha256"]


def test_a_full_disk_stops_the_build_with_one_line_naming_the_file(cache, small_disk, capsys, monkeypatch):
    """Issue 30, item 11: on a real full file system the build's error names the file it was writing and says the
    disk is full (numpy's own words are "N requested and M written"); the command line prints it as one line."""
    import importlib

    from data_prep.cli import main

    with pytest.raises(OSError, match=r"no space left on the device writing .*small_disk/data/") as err:
        dp.build_tiny(small_disk)
    assert "\n" not in str(err.value)
    # the command line on the same disk (the tiny recipe stands in for the smoke one: seconds, not minutes)
    module = importlib.import_module("data_prep.build")
    real = module.build
    monkeypatch.setattr(module, "build", lambda cfg, out: real(dp.DataConfig.tiny(), out))
    assert main(["build", "--scale", "smoke", "--out", str(small_disk)]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and "no space left on the device writing" in out
