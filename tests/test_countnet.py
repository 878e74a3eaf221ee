"""CountNet's published models (chapters 1, 3, 5): the port predicts the upstream example, matches an independent
NumPy reading of the Keras 1 / Theano layers, and fails clearly on bad files and inputs."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from ersam_lib.models.countnet import (INPUT_SHAPE, N_CLASSES, PUBLISHED, WEIGHTS_DIR, load_keras_h5, load_published,
                                       load_scaler, predict_counts, preprocess, preprocess_batch)

DATA = Path(__file__).resolve().parent / "data" / "countnet"
ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# --- an independent NumPy reference of the Keras 1.2.2 / Theano layers (float64, written from the definitions) ---


def _hard_sigmoid(x):
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv1d(x, w, b, flip):
    """Valid 1-D conv of (T, C_in) with Keras' (k, 1, C_in, C_out) kernel: Theano's true convolution (np.convolve)
    when ``flip``, otherwise a cross-correlation (the wrong convention for these files)."""
    k, _, c_in, c_out = w.shape
    y = np.tile(b.astype(np.float64), (x.shape[0] - k + 1, 1))
    for o in range(c_out):
        for c in range(c_in):
            kern = w[:, 0, c, o] if flip else w[::-1, 0, c, o]
            y[:, o] += np.convolve(x[:, c], kern, mode="valid")
    return y


def _maxpool(x, size, stride):
    n = (x.shape[0] - size) // stride + 1
    return np.stack([x[i * stride:i * stride + size].max(axis=0) for i in range(n)])


def _lstm(x, gates, backwards, gate_fn):
    """``gates``: {"i": (W, U, b), "f": ..., "c": ..., "o": ...}; returns the sequence in reading order."""
    hidden = gates["i"][1].shape[0]
    h, c, out = np.zeros(hidden), np.zeros(hidden), []
    for t in (range(len(x) - 1, -1, -1) if backwards else range(len(x))):
        pre = {g: x[t] @ w + h @ u + b for g, (w, u, b) in gates.items()}
        c = gate_fn(pre["f"]) * c + gate_fn(pre["i"]) * np.tanh(pre["c"])
        h = gate_fn(pre["o"]) * np.tanh(c)
        out.append(h)
    return np.stack(out)


def _fused_gates(w, u, b, order):
    hh = u.shape[0]
    return {g: (w[:, k * hh:(k + 1) * hh], u[:, k * hh:(k + 1) * hh], b[k * hh:(k + 1) * hh])
            for k, g in enumerate(order)}


def _reference(path, x, flip=True, order="ifco", gate_fn=_hard_sigmoid):
    """Softmax outputs (B, 11) of the Keras model in ``path`` for x (B, 500, 201), walking its config JSON."""
    with h5py.File(path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]
        wts = {name: {k: np.asarray(v, np.float64) for k, v in g.items()} for name, g in f["model_weights"].items()}
    outs = []
    for h in x.astype(np.float64):
        for layer in layers:
            kind, cfg = layer["class_name"], layer["config"]
            w = wts.get(cfg.get("name"), {})
            if kind == "Convolution1D":
                h = np.maximum(_conv1d(h, w[cfg["name"] + "_W"], w[cfg["name"] + "_b"], flip), 0.0)
            elif kind == "MaxPooling1D":
                h = _maxpool(h, cfg["pool_length"], cfg["stride"])
            elif kind == "LSTM":
                n = cfg["name"]
                h = _lstm(h, {g: (w[f"{n}_W_{g}"], w[f"{n}_U_{g}"], w[f"{n}_b_{g}"]) for g in "ifco"}, False, gate_fn)
            elif kind == "Bidirectional":
                n = cfg["layer"]["config"]["name"]
                fw = _fused_gates(w[f"forward_{n}_W"], w[f"forward_{n}_U"], w[f"forward_{n}_b"], order)
                bw = _fused_gates(w[f"backward_{n}_W"], w[f"backward_{n}_U"], w[f"backward_{n}_b"], order)
                h = np.concatenate([_lstm(h, fw, False, gate_fn), _lstm(h, bw, True, gate_fn)[::-1]], axis=1)
            elif kind == "Flatten":
                h = h.reshape(-1)
            elif kind == "Dense":
                h = h @ w[cfg["name"] + "_W"] + w[cfg["name"] + "_b"]
            elif kind == "Activation":
                h = np.exp(h - h.max()) / np.exp(h - h.max()).sum()
            else:
                assert kind in ("ZeroPadding1D", "Dropout"), kind
        outs.append(h)
    return np.stack(outs)


@pytest.fixture(scope="module")
def example_wave() -> np.ndarray:
    wave, rate = sf.read(DATA / "5_speakers.wav")
    assert rate == 16_000
    return wave


@pytest.fixture(scope="module")
def random_input() -> np.ndarray:
    # at the scale of real features (mean frame norm 1 over 201 bins), with a few loud frames
    rng = np.random.default_rng(0)
    return (rng.standard_normal((2, *INPUT_SHAPE[1:])) * rng.uniform(0.02, 0.3, (2, 500, 1))).astype(np.float32)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_model_counts_five_speakers_in_the_upstream_example(name, example_wave):
    assert predict_counts(name, example_wave[None]).tolist() == [5]


@pytest.mark.parametrize("name", PUBLISHED)
def test_port_matches_a_numpy_reference_of_the_keras_theano_layers(name, random_input):
    model = load_published(name)
    with torch.no_grad():
        logits = model(torch.from_numpy(random_input))
    assert logits.shape == (2, N_CLASSES)
    probs = torch.softmax(logits.double(), dim=1).numpy()
    ref = _reference(WEIGHTS_DIR / f"{name}.h5", random_input)
    assert np.abs(probs - ref).max() < 1e-5
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name,wrong", [
    ("F-CRNN", {"flip": False}),            # PyTorch's cross-correlation without reversing the Theano kernels
    ("F-CRNN", {"gate_fn": _logistic}),     # torch.nn.LSTM's logistic gates instead of hard_sigmoid
    ("RNN", {"order": "icfo"}),             # a wrong reading of the fused gate layout
])
def test_reference_tells_the_conventions_apart(name, wrong, random_input):
    """The comparison above is meaningful: each wrong convention moves the outputs far beyond its tolerance."""
    x = random_input[:1]
    with torch.no_grad():
        probs = torch.softmax(load_published(name)(torch.from_numpy(x)).double(), dim=1).numpy()
    assert np.abs(probs - _reference(WEIGHTS_DIR / f"{name}.h5", x, **wrong)).max() > 1e-3


def test_logits_false_keeps_the_published_softmax(random_input):
    x = torch.from_numpy(random_input)
    with torch.no_grad():
        probs = load_keras_h5(WEIGHTS_DIR / "F-CRNN.h5", logits=False)(x)
        logits = load_published("F-CRNN")(x)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))


def test_preprocess_is_upstreams_centred_stft_standardised_and_normalised(example_wave):
    feats = preprocess(example_wave)
    assert feats.shape == INPUT_SHAPE[1:] and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.linalg.norm(feats, axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    # independent check of the librosa-style centre padding (reflect) with scipy's STFT ("even" extension)
    _, _, z = scipy.signal.stft(example_wave, window="hann", nperseg=400, noverlap=240, boundary="even",
                                padded=False)
    mag = np.abs(z).T[:500] * scipy.signal.get_window("hann", 400).sum()  # undo scipy's 1/sum(window) scaling
    mean, scale = load_scaler()
    x = (mag - mean) / scale
    x /= np.mean(np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(feats, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(preprocess_batch(np.stack([example_wave, example_wave]))[1], feats)


def test_wrong_input_shapes_say_what_is_expected(example_wave):
    with pytest.raises(ValueError, match=r"\(80000,\)"):
        preprocess(example_wave[:16000])
    with pytest.raises(ValueError, match=r"\(N, 80000\)"):
        predict_counts("RNN", example_wave)
    with pytest.raises(ValueError, match="float"):
        preprocess((example_wave * 32767).astype(np.int16))
    with pytest.raises(ValueError, match=r"\(B, 500, 201\)"):
        load_published("F-CRNN")(torch.zeros(1, 201, 500))
    with pytest.raises(ValueError, match="unknown CountNet model 'CRNN'.*F-CRNN, RNN"):
        load_published("CRNN")


def test_missing_or_corrupt_weight_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"F-CRNN\.h5"):
        load_published("F-CRNN", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"scaler\.npz"):
        load_scaler(tmp_path / "scaler.npz")
    bad = tmp_path / "RNN.h5"
    bad.write_bytes((WEIGHTS_DIR / "RNN.h5").read_bytes()[:4096])  # truncated download
    with pytest.raises(ValueError, match=re.escape(f"{bad}: ") + "unreadable HDF5"):
        load_published("RNN", weights_dir=tmp_path)
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: ") + "unreadable HDF5"):
        load_published("RNN", weights_dir=tmp_path)
    with h5py.File(bad, "w") as f:
        f.create_group("model_weights")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: ") + "not a Keras model file"):
        load_published("RNN", weights_dir=tmp_path)
    with h5py.File(bad, "a") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": [{"class_name": "Dense"}]})
    with pytest.raises(ValueError, match=re.escape(f"{bad}: ") + "malformed Keras model config"):
        load_published("RNN", weights_dir=tmp_path)
    (tmp_path / "scaler.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="scaler.npz: unreadable scaler"):
        load_scaler(tmp_path / "scaler.npz")


def test_weights_are_declared_package_data():
    """A non-editable install ships every vendored file: pyproject's package-data globs cover them all."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ersam_lib"]
    files = [p.relative_to(ROOT / "ersam_lib").as_posix() for p in WEIGHTS_DIR.iterdir()]
    assert {f"{n}.h5" for n in PUBLISHED} | {"scaler.npz", "LICENSE", "PROVENANCE.md"} <= {Path(f).name for f in files}
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_a_published_model_pickles_for_a_worker_process(name):
    import pickle

    model = load_published(name)
    assert type(pickle.loads(pickle.dumps(model))) is type(model)  # chapter 5 exports it in a spawned process
