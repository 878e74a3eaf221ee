"""CountNet's published pre-trained models (Stöter et al., TASLP 2019), ported to PyTorch: the peer of the book.

Chapter 5 puts them on the frontier as the published reference row (accuracy, size, latency); chapters 1 and 3 score
them on the book's rendered mixtures for the real-speech comparison; chapter 2 times them with its latency protocol
(:data:`INPUT_SHAPE`). The weights ship with the package (``ersam_lib/weights/countnet/``, MIT, see
``PROVENANCE.md`` there): ``F-CRNN`` (conv + LSTM, 67 k parameters) and ``RNN`` (three BLSTMs, 315 k).

The files are Keras 1.2.2 HDF5 files saved from the Theano backend. They are read with h5py alone: the architecture
JSON in the file attributes names the layers, each becomes a torch module that computes what the Keras/Theano layer
computed, and the stored weights are loaded into it. Three conventions of that era matter:

- Theano's convolution is a true convolution (it flips the kernel), so ``Convolution1D`` kernels are reversed in
  time before PyTorch's cross-correlation applies them;
- Keras 1 LSTMs gate with ``hard_sigmoid`` (``clip(0.2 x + 0.5, 0, 1)``), not the logistic sigmoid, so
  ``torch.nn.LSTM`` cannot run them; their gates are stacked in the order i, f, c, o;
- ``Bidirectional`` runs a second LSTM on the reversed sequence and reverses its outputs back before concatenating.

Modules take the upstream input, ``(B, 500, 201)`` float32 (frames x |STFT| bins, :func:`preprocess`), and return
**logits** ``(B, 11)`` for the counts 0..10: the Keras model's last layer (softmax) is left out, as every model in
the book returns logits; ``softmax(logits)`` gives the published probabilities, and the argmax is the count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import progress

__all__ = [
    "INPUT_SHAPE", "KerasActivation", "KerasBidirectional", "KerasConv1D", "KerasDense", "KerasFlatten", "KerasLSTM",
    "KerasMaxPool1D", "KerasSequential", "N_BINS", "N_CLASSES", "N_FRAMES", "PUBLISHED", "SAMPLE_RATE",
    "SEGMENT_SAMPLES", "WEIGHTS_DIR", "hard_sigmoid", "load_keras_h5", "load_published", "load_scaler",
    "predict_counts", "preprocess", "preprocess_batch",
]

PUBLISHED = ("F-CRNN", "RNN")  # the published models that ship here (upstream's best, CRNN, is not public as h5)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "countnet"
SAMPLE_RATE = 16_000
SEGMENT_SAMPLES = 5 * SAMPLE_RATE
N_FFT, HOP = 400, 160
N_FRAMES, N_BINS = 500, N_FFT // 2 + 1
INPUT_SHAPE = (1, N_FRAMES, N_BINS)  # one 5-s segment, Keras layout (batch, frames, bins): what chapter 2 times
N_CLASSES = 11  # counts 0..10
_EPS = float(np.finfo(np.float64).eps)  # upstream adds it to every frame norm


# ---------------------------------------------------------------------------------------------------------------
# Layers: each reproduces one Keras 1.2.2 layer on the Theano backend, in the Keras layout (B, T, C).
# ---------------------------------------------------------------------------------------------------------------


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 1 / Theano ``hard_sigmoid``: ``clip(0.2 x + 0.5, 0, 1)``."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


# Named functions, no lambdas: a loaded model must pickle (chapter 5 exports it in a worker process).
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _linear, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid, "softmax": _softmax,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported Keras activation {name!r}; expected one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class KerasConv1D(nn.Module):
    """``Convolution1D`` (valid borders): Theano's true convolution, i.e. cross-correlation with the kernel reversed."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, activation: str, stride: int = 1):
        super().__init__()
        k, one, c_in, c_out = kernel.shape  # Keras 1 stores (filter_length, 1, input_dim, nb_filter)
        if one != 1:
            raise ValueError(f"Convolution1D kernel shape {kernel.shape} is not (k, 1, C_in, C_out)")
        self.conv = nn.Conv1d(c_in, c_out, k, stride=stride)
        with torch.no_grad():
            w = torch.from_numpy(np.ascontiguousarray(kernel[::-1, 0].transpose(2, 1, 0)))  # flip time: (out, in, k)
            self.conv.weight.copy_(w)
            self.conv.bias.copy_(torch.from_numpy(bias))
        self.activation_name = activation
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x.transpose(1, 2)).transpose(1, 2))


class KerasMaxPool1D(nn.Module):
    """``MaxPooling1D`` with valid borders (the trailing frames that do not fill a window are dropped)."""

    def __init__(self, size: int, stride: int):
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool1d(x.transpose(1, 2), self.size, self.stride).transpose(1, 2)


class KerasFlatten(nn.Module):
    """``Flatten``: row-major over (frames, channels), as the dense layer's 1160 / 20000 inputs were laid out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class KerasDense(nn.Module):
    """``Dense``: ``act(x @ W + b)`` with Keras' ``(in, out)`` kernel."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, activation: str):
        super().__init__()
        self.linear = nn.Linear(*kernel.shape)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
            self.linear.bias.copy_(torch.from_numpy(bias))
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class KerasActivation(nn.Module):
    """``Activation`` layer."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.act = _activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


def _lstm_scan(xw: torch.Tensor, u: torch.Tensor, act: Callable, inner: Callable) -> torch.Tensor:
    """Run Keras 1 LSTM cells over ``xw`` ``(..., B, T, 4H)`` (input projections, gates i, f, c, o) with recurrent
    kernels ``u`` ``(..., H, 4H)`` from a zero state; returns every hidden state ``(..., B, T, H)``. Leading axes
    are independent LSTMs (Bidirectional runs both directions in one loop)."""
    hh = u.shape[-2]
    h = xw.new_zeros(*xw.shape[:-2], hh)
    c = xw.new_zeros(*xw.shape[:-2], hh)
    outputs = []
    for t in range(xw.shape[-2]):
        z = xw[..., t, :] + torch.matmul(h, u)
        gates = inner(z)  # i, f and o use slices of it; the c slice takes tanh instead
        c = gates[..., hh:2 * hh] * c + gates[..., :hh] * act(z[..., 2 * hh:3 * hh])
        h = gates[..., 3 * hh:] * act(c)
        outputs.append(h)
    return torch.stack(outputs, dim=-2)


class KerasLSTM(nn.Module):
    """Keras 1 ``LSTM``: gates ``i, f, c, o`` stacked in that order, ``hard_sigmoid`` gates, ``tanh`` cell, zero state.

    ``w`` ``(in, 4H)``, ``u`` ``(H, 4H)``, ``b`` ``(4H,)``. With ``go_backwards`` the input is read last frame first
    and, as in Keras, the returned sequence is in reading order. ``torch.nn.LSTM`` has no hard-sigmoid gate, hence
    the explicit loop; the input projection of all frames is one matrix product before it.
    """

    def __init__(self, w: np.ndarray, u: np.ndarray, b: np.ndarray, *, return_sequences: bool,
                 go_backwards: bool = False, activation: str = "tanh", inner_activation: str = "hard_sigmoid"):
        super().__init__()
        hidden = u.shape[0]
        if w.shape[1] != 4 * hidden or u.shape != (hidden, 4 * hidden) or b.shape != (4 * hidden,):
            raise ValueError(f"LSTM weight shapes W {w.shape}, U {u.shape}, b {b.shape} do not fit 4 gates")
        self.hidden = hidden
        self.w = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w)))
        self.u = nn.Parameter(torch.from_numpy(np.ascontiguousarray(u)))
        self.b = nn.Parameter(torch.from_numpy(np.ascontiguousarray(b)))
        self.return_sequences, self.go_backwards = return_sequences, go_backwards
        self.activation_names = (activation, inner_activation)
        self.act, self.inner = _activation(activation), _activation(inner_activation)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The input half of every gate for all frames, ``(B, T, 4H)``, in reading order."""
        xw = torch.matmul(x, self.w) + self.b
        return torch.flip(xw, dims=[1]) if self.go_backwards else xw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _lstm_scan(self.project(x), self.u, self.act, self.inner)
        return y if self.return_sequences else y[:, -1]


class KerasBidirectional(nn.Module):
    """Keras 1 ``Bidirectional(LSTM, merge_mode='concat')``: the backward LSTM's outputs are re-reversed in time.

    Both directions advance in one loop (a batched matmul per frame), which halves the eager Python overhead.
    """

    def __init__(self, forward_layer: KerasLSTM, backward_layer: KerasLSTM):
        super().__init__()
        if not backward_layer.go_backwards or forward_layer.go_backwards:
            raise ValueError("Bidirectional wants a forward and a go_backwards LSTM")
        if forward_layer.u.shape != backward_layer.u.shape or \
                forward_layer.activation_names != backward_layer.activation_names:
            raise ValueError("Bidirectional wants two LSTMs of the same size and activations")
        self.forward_layer, self.backward_layer = forward_layer, backward_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fw, bw = self.forward_layer, self.backward_layer
        xw = torch.stack([fw.project(x), bw.project(x)])  # (2, B, T, 4H), each in its reading order
        y = _lstm_scan(xw, torch.stack([fw.u, bw.u]), fw.act, fw.inner)  # (2, B, T, H)
        if not fw.return_sequences:
            return torch.cat([y[0, :, -1], y[1, :, -1]], dim=-1)
        return torch.cat([y[0], torch.flip(y[1], dims=[1])], dim=-1)


class KerasSequential(nn.Sequential):
    """The ported ``Sequential`` model; checks the input against the Keras ``batch_input_shape`` first."""

    def __init__(self, layers: list[nn.Module], input_shape: tuple[int, ...]):
        super().__init__(*layers)
        self.input_shape = input_shape  # without the batch axis, e.g. (500, 201)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            raise ValueError(f"CountNet expects input (B, {want}) (frames x |STFT| bins), got {tuple(x.shape)}")
        return super().forward(x)


# ---------------------------------------------------------------------------------------------------------------
# Reading a Keras 1 HDF5 file.
# ---------------------------------------------------------------------------------------------------------------


def _layer_weights(group: h5py.Group, path: Path, name: str) -> dict[str, np.ndarray]:
    """The stored weights of layer ``name``, keyed by their suffix after the layer name (``W``, ``U_i``, ...)."""
    if name not in group:
        raise ValueError(f"{path}: no weights for layer {name!r} under model_weights")
    g = group[name]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
    return {n: np.asarray(g[n], dtype=np.float32) for n in names}


def _pick(weights: dict[str, np.ndarray], prefix: str, suffix: str, path: Path) -> np.ndarray:
    key = f"{prefix}_{suffix}"
    if key not in weights:
        raise ValueError(f"{path}: weight {key!r} missing (have {', '.join(weights) or 'none'})")
    return weights[key]


def _lstm(cfg: dict[str, Any], weights: dict[str, np.ndarray], prefix: str, path: Path,
          go_backwards: bool) -> KerasLSTM:
    """An LSTM from either Keras 1 weight layout: fused ``W/U/b`` (consume_less='gpu') or one triple per gate."""
    if f"{prefix}_W" in weights:
        w, u, b = (_pick(weights, prefix, s, path) for s in ("W", "U", "b"))
    else:  # per-gate weights; fuse them in the gate order i, f, c, o of the fused layout
        w, u, b = (np.concatenate([_pick(weights, prefix, f"{kind}_{g}", path) for g in "ifco"], axis=-1)
                   for kind in ("W", "U", "b"))
    return KerasLSTM(w, u, b, return_sequences=bool(cfg.get("return_sequences", False)), go_backwards=go_backwards,
                     activation=cfg.get("activation", "tanh"),
                     inner_activation=cfg.get("inner_activation", "hard_sigmoid"))


def _build_layer(layer: dict[str, Any], group: h5py.Group, path: Path) -> nn.Module | None:
    """One Keras 1 layer config -> torch module (``None`` for layers that are the identity at inference)."""
    kind, cfg = layer["class_name"], layer["config"]
    name = cfg.get("name", kind)
    if kind == "Dropout" or (kind == "ZeroPadding1D" and cfg.get("padding", 0) == 0):
        return None  # dropout is the identity at inference; zero padding of 0 frames changes nothing
    if kind in ("Convolution1D", "Conv1D"):
        if cfg.get("border_mode", "valid") != "valid":
            raise ValueError(f"{path}: layer {name}: only border_mode 'valid' is supported")
        w = _layer_weights(group, path, name)
        kernel, bias = _pick(w, name, "W", path), _pick(w, name, "b", path)
        return KerasConv1D(kernel, bias, cfg.get("activation", "linear"), int(cfg.get("subsample_length", 1)))
    if kind == "MaxPooling1D":
        if cfg.get("border_mode", "valid") != "valid":
            raise ValueError(f"{path}: layer {name}: only border_mode 'valid' is supported")
        size = int(cfg["pool_length"])
        return KerasMaxPool1D(size, int(cfg.get("stride") or size))
    if kind == "Flatten":
        return KerasFlatten()
    if kind == "Dense":
        w = _layer_weights(group, path, name)
        return KerasDense(_pick(w, name, "W", path), _pick(w, name, "b", path), cfg.get("activation", "linear"))
    if kind == "Activation":
        return KerasActivation(cfg["activation"])
    if kind == "LSTM":
        return _lstm(cfg, _layer_weights(group, path, name), name, path, bool(cfg.get("go_backwards", False)))
    if kind == "Bidirectional":
        if cfg.get("merge_mode", "concat") != "concat" or cfg["layer"]["class_name"] != "LSTM":
            raise ValueError(f"{path}: layer {name}: only Bidirectional(LSTM, merge_mode='concat') is supported")
        inner = cfg["layer"]["config"]
        w = _layer_weights(group, path, name)
        return KerasBidirectional(_lstm(inner, w, f"forward_{inner['name']}", path, False),
                                  _lstm(inner, w, f"backward_{inner['name']}", path, True))
    raise ValueError(f"{path}: layer {name}: Keras layer {kind!r} is not supported by this port")


def load_keras_h5(path: str | os.PathLike, *, logits: bool = True) -> KerasSequential:
    """Port a Keras 1.2.2 (Theano) ``Sequential`` HDF5 file to a torch module in eval mode; h5py only.

    With ``logits`` (default) a final softmax ``Activation`` is left out, so the module returns logits.
    Raises ``FileNotFoundError`` / ``ValueError`` naming ``path`` when the file is missing, unreadable or not such a
    model. Chapter 5 uses it through :func:`load_published`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CountNet weight file not found")
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise ValueError(f"{path}: not a Keras model file (no model_config attribute or model_weights group)")
            config = json.loads(f.attrs["model_config"])
            if config.get("class_name") != "Sequential":
                raise ValueError(f"{path}: only Keras Sequential models are supported, got {config.get('class_name')}")
            layers_cfg = config["config"]
            shape = next((c["config"]["batch_input_shape"] for c in layers_cfg
                          if "batch_input_shape" in c["config"]), None)
            if shape is None:
                raise ValueError(f"{path}: the model config declares no batch_input_shape")
            built = [_build_layer(layer, f["model_weights"], path) for layer in layers_cfg]
    except OSError as e:  # h5py's answer to a truncated or non-HDF5 file
        raise ValueError(f"{path}: unreadable HDF5 weight file ({e})") from e
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: malformed Keras model config ({type(e).__name__}: {e})") from e
    layers = [m for m in built if m is not None]
    if logits and isinstance(layers[-1], KerasActivation) and layers[-1].name == "softmax":
        layers = layers[:-1]
    model = KerasSequential(layers, tuple(int(s) for s in shape[1:]))
    for p in model.parameters():
        p.requires_grad_(False)  # published weights: inference only
    return model.eval()


def _weight_file(name: str, weights_dir: str | os.PathLike | None) -> Path:
    if name not in PUBLISHED:
        raise ValueError(f"unknown CountNet model {name!r}; expected one of {', '.join(PUBLISHED)}")
    return Path(weights_dir if weights_dir is not None else WEIGHTS_DIR) / f"{name}.h5"


def load_published(name: str, weights_dir: str | os.PathLike | None = None) -> KerasSequential:
    """The published CountNet model ``name`` (one of :data:`PUBLISHED`) as a torch module in eval mode.

    Input ``(B, 500, 201)`` float32 from :func:`preprocess_batch`; output logits ``(B, 11)`` for counts 0..10.
    Chapter 5 places it on the frontier (parameters, latency, accuracy), chapters 1 and 3 score it on real speech,
    chapter 2 can time it with ``input_shape=INPUT_SHAPE``.
    """
    return load_keras_h5(_weight_file(name, weights_dir))


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing (upstream predict.py with librosa 0.7.2 and scikit-learn, here in numpy/scipy).
# ---------------------------------------------------------------------------------------------------------------


def load_scaler(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The per-bin standardisation ``(mean, scale)`` of the |STFT| (``scaler.npz``: ``arr_0`` mean, ``arr_1`` scale)."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "scaler.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CountNet scaler file not found")
    try:
        with np.load(path) as data:
            mean, scale = np.asarray(data["arr_0"], np.float64), np.asarray(data["arr_1"], np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: unreadable scaler file, want arr_0 (mean) and arr_1 (scale) ({e})") from e
    if mean.shape != (N_BINS,) or scale.shape != (N_BINS,):
        raise ValueError(f"{path}: scaler arrays have shapes {mean.shape}, {scale.shape}, want ({N_BINS},)")
    return mean, scale


def _check_waves(waves: np.ndarray, batched: bool) -> np.ndarray:
    waves = np.asarray(waves)
    want = f"(N, {SEGMENT_SAMPLES})" if batched else f"({SEGMENT_SAMPLES},)"
    if waves.ndim != (2 if batched else 1) or waves.shape[-1] != SEGMENT_SAMPLES:
        raise ValueError(f"CountNet expects waveforms of shape {want} (5 s at {SAMPLE_RATE} Hz), got {waves.shape}")
    if not np.issubdtype(waves.dtype, np.floating):
        raise ValueError(f"CountNet expects float waveforms in [-1, 1], got dtype {waves.dtype}")
    return waves.astype(np.float64, copy=False)


def _magnitude_stft(waves: np.ndarray) -> np.ndarray:
    """librosa 0.7.2 ``abs(stft(y, n_fft=400, hop_length=160))`` transposed: periodic Hann window, centred frames
    (reflect-padded by n_fft/2 on both sides, librosa's default ``pad_mode`` before 0.10). ``(N, frames, 201)``."""
    padded = np.pad(waves, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP]
    window = scipy.signal.get_window("hann", N_FFT, fftbins=True)
    return np.abs(np.fft.rfft(frames * window, axis=-1))


def preprocess_batch(waves: np.ndarray, scaler: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """CountNet's input for each 5-s, 16-kHz waveform: ``(N, 80000)`` -> ``(N, 500, 201)`` float32.

    Upstream ``predict.py``: |STFT| (n_fft 400, hop 160, centred), standardised per bin with the scaler, the first
    500 frames, divided by the mean over frames of the per-frame L2 norm. The standardisation is not scale-free:
    feed mixtures at LibriCount's level (peak-normalised, as the book's renderer writes them).
    """
    waves = _check_waves(waves, batched=True)
    mean, scale = scaler if scaler is not None else load_scaler()
    x = (_magnitude_stft(waves)[:, :N_FRAMES] - mean) / scale
    theta = np.linalg.norm(x, axis=-1) + _EPS  # (N, frames)
    return (x / theta.mean(axis=1)[:, None, None]).astype(np.float32)


def preprocess(wave: np.ndarray, scaler: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One waveform ``(80000,)`` -> ``(500, 201)`` float32 (see :func:`preprocess_batch`)."""
    return preprocess_batch(_check_waves(wave, batched=False)[None], scaler)[0]


def predict_counts(model: str | nn.Module, waves: np.ndarray, *, batch_size: int = 32,
                   weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """Speaker counts (argmax over 0..10) of a published model for ``(N, 80000)`` waveforms -> ``(N,)`` int64.

    ``model`` is a name from :data:`PUBLISHED` or a module from :func:`load_published` (to load it once for many
    calls). Chapters 1 and 3 score it on the rendered mixtures; chapter 5 reports its accuracy on the frontier.
    """
    waves = _check_waves(waves, batched=True)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = load_published(model, weights_dir) if isinstance(model, str) else model
    net = net.to(device).eval()
    scaler = load_scaler(None if weights_dir is None else Path(weights_dir) / "scaler.npz")
    counts = []
    with torch.inference_mode():
        for start in progress(range(0, len(waves), batch_size), desc="CountNet", unit="batch"):
            x = torch.from_numpy(preprocess_batch(waves[start:start + batch_size], scaler)).to(device)
            counts.append(net(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
