"""The teacher of chapter 3: the CRNN and the wav2vec2 code paths, training, and the hand-off to chapter 4."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from ersam_lib.models.teacher import (CRNNTeacher, TeacherConfig, TeacherUnavailable, Wav2Vec2Counter, build_teacher,
                                      build_wav2vec2, load_teacher, save_teacher, teacher_info, tiny_wav2vec2)
from ersam_lib.training.fit import train_classifier

torch.set_num_threads(1)


def tone_waveforms(n_per_class=6, n_classes=3, seconds=0.5, sr=16_000, seed=0):
    """k = the number of simultaneous tones (a stand-in for concurrent speakers) plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    waves, labels = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            freqs = 200 + 1500 * torch.rand(k, generator=g)
            w = sum((torch.sin(2 * math.pi * f * t) for f in freqs), torch.zeros_like(t))
            waves.append(w + 0.05 * torch.randn(t.shape, generator=g))
            labels.append(k)
    return torch.stack(waves), torch.tensor(labels)


def test_config_for_scale():
    assert TeacherConfig.for_scale("smoke").epochs <= 2
    assert TeacherConfig.for_scale("paper").kind == "wav2vec2"
    with pytest.raises(ValueError, match="teacher kind"):
        TeacherConfig(kind="bert")


def test_crnn_shapes_and_errors():
    m = CRNNTeacher(40, 11).eval()
    assert m(torch.randn(2, 40, 250)).shape == (2, 11)
    assert m(torch.randn(1, 40, 37)).shape == (1, 11)  # any length
    with pytest.raises(ValueError, match="expected"):
        m(torch.randn(2, 30, 100))
    with pytest.raises(ValueError):
        build_teacher("svm", 40, 11)


def test_tiny_wav2vec2_counter_runs_the_torchaudio_code_path():
    waves, _ = tone_waveforms(n_per_class=1)
    m = tiny_wav2vec2(n_classes=3).eval()
    assert isinstance(m, Wav2Vec2Counter)
    assert "Wav2Vec2Model" in type(m.encoder).__name__
    out = m(waves)
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="waveforms"):
        m(waves[:, None])


def test_wav2vec2_trains_on_generated_waveforms():
    torch.manual_seed(0)
    waves, labels = tone_waveforms()
    ds = TensorDataset(waves, labels)
    m = tiny_wav2vec2(n_classes=3)
    rep = train_classifier(m, ds, ds, TeacherConfig(kind="wav2vec2", epochs=6, batch_size=6, lr=3e-3))
    assert len(rep.history) == 6
    assert rep.history[-1]["train_loss"] < rep.history[0]["train_loss"]
    assert 0 <= rep.best_val_acc <= 1 and rep.wall_s > 0


def test_pretrained_bundle_loads_or_says_why(monkeypatch):
    # offline here: the download must fail with TeacherUnavailable, never a half-built model
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-cache-for-test")
    try:
        m = build_wav2vec2(n_classes=4)
    except TeacherUnavailable as e:
        assert "WAV2VEC2_BASE" in str(e)
    else:  # a machine with internet (or a cache): then the real bundle must work
        assert m(torch.zeros(1, 16_000)).shape == (1, 4)


def test_crnn_learns_and_round_trips_through_run_dir(tmp_path):
    torch.manual_seed(0)
    y = torch.arange(3).repeat(16)
    x = torch.randn(48, 16, 40) + 1.5 * y[:, None, None].float()
    ds = TensorDataset(x, y)
    cfg = TeacherConfig(epochs=4, batch_size=8, channels=(4, 8, 8), hidden=8)
    m = build_teacher("crnn", 16, 3, cfg)
    rep = train_classifier(m, ds, ds, cfg)
    assert rep.best_val_acc > 0.6
    assert rep.best_val_acc == max(h["val_acc"] for h in rep.history)
    save_teacher(tmp_path, m, {"kind": "crnn", "n_features": 16, "n_classes": 3, "channels": [4, 8, 8], "hidden": 8,
                               "val_acc": rep.best_val_acc})
    loaded = load_teacher(tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    m.cpu().eval()  # training left it on the GPU where there is one
    with torch.no_grad():
        assert torch.allclose(m(x[:5]), loaded(x[:5]))
    assert teacher_info(tmp_path)["params"] == sum(p.numel() for p in m.parameters())
    with pytest.raises(FileNotFoundError, match="chapter 03"):
        load_teacher(tmp_path / "empty")
    with pytest.raises(ValueError, match="lacks"):
        save_teacher(tmp_path, m, {"kind": "crnn"})


def test_load_teacher_refuses_changed_weights_and_other_data(tmp_path):
    import json

    from ersam_lib.core.io import ArtifactError, atomic_torch_save

    meta = tmp_path / "data" / "features" / "logmel" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"format": 2, "key": "A"}))
    m = build_teacher("crnn", 16, 3, TeacherConfig(channels=(4, 8, 8), hidden=8))
    info = {"kind": "crnn", "n_features": 16, "n_classes": 3, "channels": [4, 8, 8], "hidden": 8, "data_key": "A"}
    save_teacher(tmp_path, m, info)
    assert teacher_info(tmp_path)["weights_sha256"] and load_teacher(tmp_path) is not None
    other = build_teacher("crnn", 16, 3, TeacherConfig(channels=(4, 8, 8), hidden=8))
    atomic_torch_save(other.state_dict(), tmp_path / "teacher" / "teacher.pt")  # replaced behind chapter 3's back
    with pytest.raises(ArtifactError, match=r"teacher\.pt does not match the weights_sha256 .*--only 03$"):
        load_teacher(tmp_path)
    save_teacher(tmp_path, m, info)
    meta.write_text(json.dumps({"format": 2, "key": "B"}))  # chapter 1 rebuilt the data since
    with pytest.raises(ArtifactError, match="made from other data than the run holds now .its content key differs: chapter 01"):
        load_teacher(tmp_path)
