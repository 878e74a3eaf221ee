"""A latency / energy / memory model for any network built from standard layers (chapter 2; used in chapters 4-6).

Two parts, as in the hardware-aware NAS literature:

1. a **lookup table** (Once-for-All): one entry ``{count, mean, var, median, p90}`` per *layer configuration*
   (type, hyper-parameters and input shape), measured on one device and stored with that device's metadata; a
   network's latency is first estimated as the sum of its layers' entries, found by running it once with forward
   hooks on its leaf layers;
2. a **learned correction** (Speckhard et al.): a random forest that maps architecture features (the LUT sum, FLOPs,
   parameters, serialized size, peak activation memory, layer counts) to the ratio measured / LUT sum, fitted on
   architectures measured end to end. It absorbs what a per-layer sum misses (glue code between layers, caches).
   It is saved as its training data (``correction.json``: features, targets, forest parameters), never pickled,
   and refitted on load: with a fixed ``random_state`` and one job the refit grows the same trees.
   For a runtime whose delegate fuses layers (ExecuTorch + XNNPACK), the eager per-layer times say little, and the
   correction is instead a ridge regression of the measured latency on what such a runtime's time is made of: the
   multiply-accumulates and the number of layers of each operator family and the bytes of activations written
   (``kind="ridge"``), saved and refitted the same way.

Energy is latency x the device's active power (host: an assumption, see :class:`ersam_lib.measure.devices.PowerModel`;
phone: measured), reported per 5-s segment and as ERSAM's "mW x 12 h" (the average power if one segment is
processed every 5 s).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.io import ArtifactError, atomic_write_json, read_json
from ..core.rundir import missing_message, rebuild_command, run_file
from .complexity import count_params

__all__ = [
    "CostEstimate", "CostModel", "EnergyCalibration", "isolate", "LatencyLUT", "layer_key", "layer_key_of",
    "LayerRecord", "model_size_bytes", "SEGMENT_SECONDS", "trace_layers"
]

SEGMENT_SECONDS = 5.0  # one social-ambiance decision per 5-s segment
# Layers treated as one operator even though some own children (MultiheadAttention owns out_proj). A module of
# one's own joins them by defining ``cost_family`` (a FAMILIES name) and ``cost_macs(in_shape) -> int``: the search
# space's attention block does, because its forward uses its children's weights functionally, so hooks on the
# children never fire and the trace would not see the block at all.
_ATOMIC = (nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN)
_STATS = ("count", "mean", "var", "median", "p90", "min")
# Op families used as features of the correction model.
CORRECTIONS = ("forest", "ridge")
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))  # RidgeCV's grid, chosen by leave-one-out
FAMILIES = ("conv1d", "conv1d_dw", "conv2d", "conv2d_dw", "linear", "rnn", "attention", "norm", "act", "pool",
            "other")


@dataclass
class LayerRecord:
    """One leaf layer as a network executes it: its LUT key and the quantities the model needs."""

    key: str
    family: str
    macs: int
    params: int
    in_bytes: int
    out_bytes: int
    in_shape: tuple[int, ...]


def _shape(t: Any) -> tuple[int, ...]:
    while isinstance(t, (tuple, list)):
        t = t[0]
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def _numel(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel()
    if isinstance(t, (tuple, list)):
        return sum(_numel(x) for x in t)
    return 0


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _conv_cfg(m: nn.Module) -> str:
    return (f"cin={m.in_channels}|cout={m.out_channels}|k={_dims(m.kernel_size)}|s={_dims(m.stride)}"
            f"|p={_dims(m.padding) if not isinstance(m.padding, str) else m.padding}|d={_dims(m.dilation)}"
            f"|g={m.groups}|bias={int(m.bias is not None)}")


def _config(m: nn.Module) -> str:
    """The hyper-parameters that decide a layer's cost (the weights' values do not)."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _conv_cfg(m)
    if isinstance(m, nn.Linear):
        return f"in={m.in_features}|out={m.out_features}|bias={int(m.bias is not None)}"
    if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
        return (f"in={m.input_size}|h={m.hidden_size}|layers={m.num_layers}|bi={int(m.bidirectional)}"
                f"|bf={int(m.batch_first)}")
    if isinstance(m, nn.MultiheadAttention):
        return f"e={m.embed_dim}|heads={m.num_heads}|bf={int(m.batch_first)}"
    # Everything else (norms, activations, pools, dropout...): type and its printed settings.
    return m.extra_repr().replace(" ", "")


def _is_atomic(m: nn.Module) -> bool:
    return isinstance(m, _ATOMIC) or hasattr(m, "cost_family")


def _family(m: nn.Module) -> str:
    if hasattr(m, "cost_family"):
        return str(m.cost_family)
    if isinstance(m, nn.Conv1d):
        return "conv1d_dw" if m.groups > 1 and m.groups == m.in_channels else "conv1d"
    if isinstance(m, nn.Conv2d):
        return "conv2d_dw" if m.groups > 1 and m.groups == m.in_channels else "conv2d"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
        return "rnn"
    if isinstance(m, nn.MultiheadAttention):
        return "attention"
    if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "norm"
    if type(m).__module__ == "torch.nn.modules.activation":
        return "act"
    if "pool" in type(m).__name__.lower():
        return "pool"
    return "other"


def _macs(m: nn.Module, in_shape: tuple[int, ...], out: Any) -> int:
    """Multiply-accumulates of one call (elementwise layers count one op per input element)."""
    n_out = _numel(out)
    if hasattr(m, "cost_macs"):
        return int(m.cost_macs(in_shape))
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _numel(out if isinstance(out, torch.Tensor) else out[0]) * (m.in_channels // m.groups) * math.prod(
            m.kernel_size)
    if isinstance(m, nn.Linear):
        return n_out * m.in_features
    if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
        gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[type(m)]
        steps = math.prod(in_shape[:-1])  # batch x time
        dirs = 2 if m.bidirectional else 1
        first = gates * m.hidden_size * (m.input_size + m.hidden_size)
        rest = gates * m.hidden_size * (m.hidden_size * dirs + m.hidden_size)
        return steps * dirs * (first + (m.num_layers - 1) * rest)
    if isinstance(m, nn.MultiheadAttention):
        b, t = (in_shape[0], in_shape[1]) if m.batch_first else (in_shape[1], in_shape[0])
        e = m.embed_dim
        return b * (4 * t * e * e + 2 * t * t * e)
    return math.prod(in_shape) if in_shape else 0


class _Isolated(nn.Module):
    """A layer lifted out of a network so it can be timed alone with one tensor input (keeps its LUT key)."""

    def __init__(self, layer: nn.Module, key: str, kwargs: dict[str, Any]):
        super().__init__()
        self.layer, self.key, self.kwargs = layer, key, kwargs

    def forward(self, x: torch.Tensor) -> Any:
        if isinstance(self.layer, nn.MultiheadAttention):
            return self.layer(x, x, x, **self.kwargs)
        return self.layer(x)


def layer_key(m: nn.Module, in_shape: Sequence[int], kwargs: dict[str, Any] | None = None) -> str:
    """LUT key of layer ``m`` called on an input of ``in_shape``: ``Type|hyper-parameters|in=BxCxL``."""
    extra = ""
    if isinstance(m, nn.MultiheadAttention):
        extra = f"|nw={int(bool((kwargs or {}).get('need_weights', True)))}"
    return f"{type(m).__name__}|{_config(m)}{extra}|in={_dims(in_shape)}"


def layer_key_of(module: nn.Module, input_shape: Sequence[int]) -> str | None:
    """The LUT key when ``module`` is a single layer (or an isolated one), else ``None`` (chapter 2)."""
    if isinstance(module, _Isolated):
        return module.key
    if _is_leaf(module):
        return layer_key(module, input_shape)
    return None


def _is_leaf(m: nn.Module) -> bool:
    return _is_atomic(m) or not list(m.children())


def _leaves(model: nn.Module) -> Iterable[nn.Module]:
    """Leaf layers, not descending into atomic ones (MultiheadAttention's out_proj is part of it)."""
    if _is_leaf(model):
        yield model
        return
    for child in model.children():
        yield from _leaves(child)


def trace_layers(model: nn.Module, input_shape: Sequence[int], keep_modules: bool = False
                 ) -> list[LayerRecord] | list[tuple[LayerRecord, nn.Module, dict[str, Any]]]:
    """Run ``model`` once on zeros of ``input_shape`` and record every leaf layer call, in order (chapter 2).

    A layer called twice is recorded twice (it costs twice). With ``keep_modules`` each record comes with the
    module and the call's keyword arguments, so that it can be timed in isolation.
    """
    records: list[Any] = []
    was_training = model.training
    model.eval()

    def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        in_shape = _shape(args[0]) if args else _shape(next(iter(kwargs.values()), None))
        rec = LayerRecord(key=layer_key(m, in_shape, kwargs), family=_family(m), macs=int(_macs(m, in_shape, out)),
                          params=sum(p.numel() for p in m.parameters()),
                          in_bytes=4 * _numel(args[0] if args else 0), out_bytes=4 * _numel(out), in_shape=in_shape)
        records.append((rec, m, dict(kwargs)) if keep_modules else rec)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in _leaves(model)]
    try:
        with torch.inference_mode():
            model(torch.zeros(*input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not records:
        raise ValueError(f"{type(model).__name__} ran no layers (is it built from nn.Module layers?)")
    return records


def isolate(record: LayerRecord, module: nn.Module, kwargs: dict[str, Any]) -> nn.Module:
    """A copy of a traced layer that a :class:`~ersam_lib.measure.devices.Device` can time alone."""
    import copy

    layer = copy.deepcopy(module).eval()
    # Time the layer itself when it takes one tensor: a wrapper would add its own call overhead to the entry.
    return _Isolated(layer, record.key, kwargs) if isinstance(layer, nn.MultiheadAttention) else layer


def model_size_bytes(model: nn.Module) -> int:
    """Serialized size of the float32 weights (``torch.save`` of the state dict)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@dataclass
class CostEstimate:
    """What the cost model predicts for one network on one device (chapter 2; the search of chapter 5 uses it)."""

    latency_ms: float
    lut_latency_ms: float
    energy_mj: float
    avg_power_mw_12h: float
    energy_12h_j: float
    macs: int
    params: int
    size_bytes: int
    peak_activation_bytes: int
    n_layers: int
    lut_coverage: float  # share of layers whose key was in the table (the rest came from the fallback fit)
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EnergyCalibration:
    """One documented factor that maps this device's energy model onto a published scale (chapter 5).

    The host's energy is latency x an assumed active power (:class:`ersam_lib.measure.devices.PowerModel`), so its
    absolute value is not comparable with a phone's. Scaling it so that one reference network costs what the paper
    measured for its counterpart keeps the paper's budgets meaningful: with the MobileNetV2-style baseline set to
    Speckhard et al.'s 13.9 mJ for MobileNetV2 on a Pixel 4 XL, their E0 = 1.25 mJ means "11 times cheaper than
    MobileNetV2" here too. On a phone profile that measures energy, use :meth:`identity`: the paper's constants apply
    unchanged.
    """

    scale: float
    reference: str = "none"
    reference_mj: float = float("nan")
    device_mj: float = float("nan")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"an energy calibration needs a finite, positive scale, got {self.scale!r}")

    @classmethod
    def to_reference(cls, device_mj: float, reference_mj: float = 13.9,
                     reference: str = "MobileNetV2, Speckhard et al. 2022 (Pixel 4 XL)") -> EnergyCalibration:
        """The factor that makes ``device_mj`` (the reference network on this device) equal ``reference_mj``."""
        if not (device_mj > 0 and reference_mj > 0):
            raise ValueError(f"energies must be positive, got device {device_mj} mJ, reference {reference_mj} mJ")
        return cls(reference_mj / device_mj, reference, reference_mj, device_mj)

    @classmethod
    def identity(cls) -> EnergyCalibration:
        """No calibration (a device that measures energy, such as a phone over adb)."""
        return cls(1.0, "identity (measured energy)", float("nan"), float("nan"))

    def __call__(self, energy_mj: float) -> float:
        """The calibrated energy of a device energy ``energy_mj``."""
        return float(energy_mj) * self.scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatencyLUT:
    """Per-layer latency table ``key -> {count, mean, var, median, p90}`` (ms) with device metadata (OFA style)."""

    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)

    def add(self, record: LayerRecord, stats: Any) -> None:
        self.entries[record.key] = {k: float(getattr(stats, k)) for k in _STATS}
        self.families[record.key], self.macs[record.key] = record.family, record.macs

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "entries": {
            k: v | {"family": self.families.get(k, "other"), "macs": self.macs.get(k, 0)}
            for k, v in self.entries.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LatencyLUT:
        lut = cls(metadata=doc.get("metadata", {}))
        for k, v in doc["entries"].items():
            lut.entries[k] = {s: float(v.get(s, v["median"])) for s in _STATS}
            lut.families[k], lut.macs[k] = v.get("family", "other"), int(v.get("macs", 0))
        return lut


class _Fallback:
    """Latency of a layer missing from the LUT: per-family log-log fit of its latency statistic on MACs."""

    def __init__(self, lut: LatencyLUT, statistic: str = "median"):
        self.coef: dict[str, np.ndarray] = {}
        by_family: dict[str, list[tuple[float, float]]] = {}
        for k, e in lut.entries.items():
            by_family.setdefault(lut.families.get(k, "other"), []).append((lut.macs.get(k, 0), e[statistic]))
        all_pts = [p for pts in by_family.values() for p in pts]
        for fam, pts in [*by_family.items(), ("*", all_pts)]:
            if len(pts) >= 2:
                x = np.log1p([p[0] for p in pts])
                y = np.log([max(p[1], 1e-6) for p in pts])
                a = np.vstack([np.ones_like(x), x]).T
                self.coef[fam] = np.linalg.lstsq(a, y, rcond=None)[0]

    def __call__(self, rec: LayerRecord) -> float:
        coef = self.coef.get(rec.family, self.coef.get("*"))
        if coef is None:
            raise ValueError(f"layer {rec.key!r} is not in the LUT and the LUT is too small to extrapolate")
        return float(np.exp(coef[0] + coef[1] * np.log1p(rec.macs)))


class CostModel:
    """LUT + learned correction + power model: ``predict(model, input_shape) -> CostEstimate`` (chapter 2).

    Build one with :func:`ersam_lib.experiments.profiling.build_cost_model`; later chapters ``CostModel.load(RUN_DIR)``.
    """

    def __init__(self, lut: LatencyLUT, power_mw: float, power_source: str, correction: dict[str, Any] | None = None,
                 statistic: str = "median"):
        if power_mw <= 0:
            raise ValueError(f"active power must be positive, got {power_mw} mW")
        if statistic not in ("median", "min"):
            raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
        self.statistic = statistic  # which latency statistic the LUT sums and the model predicts
        self.lut, self.power_mw, self.power_source = lut, float(power_mw), power_source
        self.regressor: Any | None = None  # the fitted correction: a random forest or a (scaled) ridge regression
        self.feature_names: list[str] = []
        self.correction: dict[str, Any] | None = None
        if correction is not None:
            self._fit_correction(correction)
        self._fallback = _Fallback(lut, statistic)

    def refit_fallback(self) -> None:
        """Refit the extrapolation for unseen layers after entries were added to the LUT."""
        self._fallback = _Fallback(self.lut, self.statistic)

    @property
    def device(self) -> str:
        return str(self.lut.metadata.get("device", "unknown"))

    def missing_layers(self, model: nn.Module, input_shape: Sequence[int]) -> list[Any]:
        """Traced layers (record, module, kwargs) whose key is not in the LUT yet."""
        return [r for r in trace_layers(model, input_shape, keep_modules=True) if r[0].key not in self.lut]

    def features(self, model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
        """Architecture features: LUT sum, FLOPs, size, memory and per-family counts and LUT sums."""
        recs = trace_layers(model, input_shape)
        lat = [self.lut.entries[r.key][self.statistic] if r.key in self.lut else self._fallback(r) for r in recs]
        feats: dict[str, float] = {
            "lut_ms": float(sum(lat)), "macs": float(sum(r.macs for r in recs)),
            "params": float(count_params(model)), "size_bytes": float(model_size_bytes(model)),
            "peak_act_bytes": float(max(r.in_bytes + r.out_bytes for r in recs)), "n_layers": float(len(recs)),
            "act_bytes": float(sum(r.out_bytes for r in recs)),
            # written by layers over 2-D (C, F, T) maps: a runtime that computes channels-last converts their layout
            "act_bytes_2d": float(sum(r.out_bytes for r in recs if len(r.in_shape) == 4)),
            "coverage": float(np.mean([r.key in self.lut for r in recs])),
        }
        for fam in FAMILIES:
            feats[f"n_{fam}"] = float(sum(r.family == fam for r in recs))
            feats[f"ms_{fam}"] = float(sum(t for r, t in zip(recs, lat) if r.family == fam))
            feats[f"macs_{fam}"] = float(sum(r.macs for r in recs if r.family == fam))
        return feats

    def fit_correction(self, feats: Sequence[dict[str, float]], measured_ms: Sequence[float], seed: int = 0,
                       n_estimators: int = 200, kind: str = "forest") -> CostModel:
        """Fit the correction on architectures measured end to end: ``"forest"``, a random forest on
        log(measured / LUT sum) from every feature (eager PyTorch, whose time is the sum of its layers' plus glue);
        ``"ridge"``, a ridge regression of the measured latency on each family's MACs and layer count, the
        activation bytes (all, and those of 2-D maps) and the eager LUT sum (a runtime that fuses layers, where the
        eager LUT sum is only a feature among others)."""
        if len(feats) != len(measured_ms) or len(feats) < 3:
            raise ValueError(f"need >= 3 matching (features, latency) pairs, got {len(feats)}, {len(measured_ms)}")
        if kind not in CORRECTIONS:
            raise ValueError(f"unknown correction {kind!r}; expected one of {', '.join(CORRECTIONS)}")
        measured = np.asarray(measured_ms, dtype=float)
        if kind == "ridge":
            names = [f"{q}_{fam}" for fam in FAMILIES for q in ("macs", "n")] + ["act_bytes", "act_bytes_2d", "lut_ms"]
            x = np.array([[f[n] for n in names] for f in feats])
            self._fit_correction({"kind": "ridge", "feature_names": names, "x": x.tolist(), "y": measured.tolist(),
                              "params": {"alphas": list(RIDGE_ALPHAS)}})
            return self
        names = sorted(feats[0])
        x = np.array([[f[n] for n in names] for f in feats])
        y = np.log(measured / x[:, names.index("lut_ms")])
        self._fit_correction({"feature_names": names, "x": x.tolist(), "y": y.tolist(),
                          "params": {"n_estimators": n_estimators, "min_samples_leaf": 2, "random_state": seed}})
        return self

    def _fit_correction(self, correction: dict[str, Any]) -> None:
        """Fit the correction from its training data: the forest deterministically (fixed ``random_state``,
        ``n_jobs=1``), the ridge regression exactly (closed form, its penalty chosen by leave-one-out)."""
        x, y = np.asarray(correction["x"], dtype=float), np.asarray(correction["y"], dtype=float)
        self.correction = correction
        self.feature_names = list(correction["feature_names"])
        if correction.get("kind", "forest") == "ridge":
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            ridge = RidgeCV(alphas=correction["params"]["alphas"])
            self.regressor = make_pipeline(StandardScaler(), ridge).fit(x, y)
            return
        from sklearn.ensemble import RandomForestRegressor

        self.regressor = RandomForestRegressor(**correction["params"], n_jobs=1).fit(x, y)

    def predict_latency(self, feats: dict[str, float]) -> float:
        if self.regressor is None:
            return feats["lut_ms"]
        x = np.array([[feats[n] for n in self.feature_names]])
        if self.correction is not None and self.correction.get("kind") == "ridge":
            # linear in the costs; never below half the fastest architecture it was fitted on (a linear model can
            # extrapolate to zero or below for a network smaller than any it saw)
            floor = 0.5 * float(np.min(self.correction["y"]))
            return max(floor, float(self.regressor.predict(x)[0]))
        return float(feats["lut_ms"] * np.exp(self.regressor.predict(x)[0]))

    def predict(self, model: nn.Module, input_shape: Sequence[int]) -> CostEstimate:
        """Latency, energy, FLOPs, size and memory of ``model`` on an input of ``input_shape`` (one segment)."""
        f = self.features(model, input_shape)
        latency = self.predict_latency(f)
        energy = latency * self.power_mw / 1000.0  # ms x mW = uJ
        avg_mw = energy / SEGMENT_SECONDS  # mJ per 5 s -> mW
        return CostEstimate(latency_ms=latency, lut_latency_ms=f["lut_ms"], energy_mj=energy,
                            avg_power_mw_12h=avg_mw, energy_12h_j=avg_mw * 12 * 3600 / 1000.0, macs=int(f["macs"]),
                            params=int(f["params"]), size_bytes=int(f["size_bytes"]),
                            peak_activation_bytes=int(f["peak_act_bytes"]), n_layers=int(f["n_layers"]),
                            lut_coverage=f["coverage"], device=self.device)

    # -- persistence: RUN_DIR/profiling/{lut.json, correction.json, costmodel.json} -------------------------------
    @staticmethod
    def _file(path: str | os.PathLike, key: str, runtime: str = "eager") -> Path:
        """The well-known file ``key`` (of the profiling stage, :mod:`ersam_lib.core.stages`) in a run folder or in a
        profiling folder itself; a model of another runtime than eager PyTorch has its own ``<key>_<runtime>`` files
        (the LUT is shared)."""
        path = Path(path)
        key = key if runtime == "eager" or key == "lut" else f"{key}_{runtime}"
        name = run_file(path, key).name
        return path / name if path.name == "profiling" else run_file(path, key)

    def save(self, run_dir: str | os.PathLike, runtime: str = "eager") -> Path:
        """Write ``lut.json``, ``correction.json`` (the forest's training data) and, last, ``costmodel.json``;
        ``runtime`` names the runtime the correction predicts (chapter 2's ExecuTorch model: ``"executorch"``)."""
        atomic_write_json(self._file(run_dir, "lut"), self.lut.to_json())
        if self.correction is not None:
            atomic_write_json(self._file(run_dir, "correction", runtime), self.correction)
        meta = {"power_mw": self.power_mw, "power_source": self.power_source, "feature_names": self.feature_names,
                "has_correction": self.correction is not None, "statistic": self.statistic, "runtime": runtime}
        return atomic_write_json(self._file(run_dir, "costmodel", runtime), meta).parent

    @classmethod
    def load(cls, run_dir: str | os.PathLike, runtime: str = "eager") -> CostModel:
        """The cost model chapter 2 saved in ``RUN_DIR/profiling`` (or a profiling folder measured elsewhere), for
        eager PyTorch or, with ``runtime="executorch"``, for the runtime chapter 6 deploys to.

        Only JSON is read, and checked: a damaged or malformed file raises :class:`~ersam_lib.core.io.ArtifactError`
        naming it.
        """
        meta_path = cls._file(run_dir, "costmodel", runtime)
        if not meta_path.exists():
            raise FileNotFoundError(missing_message(meta_path, run_dir, "profiling"))
        legacy = cls._file(run_dir, "correction", runtime).with_suffix(".pkl")
        try:
            meta = read_json(meta_path)
            if meta["has_correction"] and legacy.exists() and not cls._file(run_dir, "correction", runtime).exists():
                raise ValueError(f"{legacy} is a pickle, which is no longer loaded (it could run code); "
                                 f"correction.json replaces it")
            lut = LatencyLUT.from_json(read_json(cls._file(run_dir, "lut")))
            correction = _checked_correction(read_json(cls._file(run_dir, "correction", runtime))) \
                if meta["has_correction"] else None
            return cls(lut, meta["power_mw"], meta["power_source"], correction, meta.get("statistic", "median"))
        except (ArtifactError, FileNotFoundError, KeyError, TypeError, ValueError) as e:
            where = ("" if Path(run_dir).name == "profiling" else
                     f"; rebuild it: {rebuild_command(run_dir, 'profiling')}")
            raise ArtifactError(f"cannot load the cost model in {meta_path.parent}: "
                                f"{type(e).__name__ + ': ' if isinstance(e, KeyError) else ''}{e}{where}") from None


def _checked_correction(doc: Any) -> dict[str, Any]:
    """``correction.json`` as :meth:`CostModel._fit_correction` needs it, or ``ValueError`` saying what is wrong."""
    names, x, y, params = doc["feature_names"], doc["x"], doc["y"], doc["params"]
    kind = doc.get("kind", "forest")
    if kind not in CORRECTIONS:
        raise ValueError(f"correction.json: unknown kind {kind!r}; expected one of {', '.join(CORRECTIONS)}")
    if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) >= 3):
        raise ValueError("correction.json needs matching lists x and y of at least 3 rows")
    values = np.asarray(x, dtype=float)
    if values.shape != (len(y), len(names)) or not np.isfinite(values).all() or not np.isfinite(y).all():
        raise ValueError(f"correction.json: x must be finite numbers of shape ({len(y)}, {len(names)}), y finite")
    if kind == "ridge":
        alphas = params.get("alphas") if set(params) == {"alphas"} else None
        if not (isinstance(alphas, list) and alphas and all(isinstance(a, int | float) and a > 0 for a in alphas)):
            raise ValueError(f"correction.json: unexpected ridge parameters {params}")
    elif set(params) != {"n_estimators", "min_samples_leaf", "random_state"} or \
            not all(isinstance(v, int) and v >= 0 for v in params.values()):
        raise ValueError(f"correction.json: unexpected forest parameters {params}")
    return doc
