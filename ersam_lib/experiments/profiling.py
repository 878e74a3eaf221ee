"""Operator cost profiling, the hardware-aware rule, and the validated cost model (chapter 2).

The chapter's pipeline, one function per step:

1. :func:`profile_operators` times each operator of an :class:`OperatorGrid` on a device (Conv1d over channels x
   kernel x stride x sequence length, depthwise/pointwise convs, LSTM/GRU, self-attention, linear layers);
2. :meth:`ersam_lib.measure.costrule.CostRule.fit` turns the Conv1d grid into ERSAM's rule (no operator where large
   channels, kernel and sequence length coexist), saved as ``RUN_DIR/profiling/rule.json`` for chapter 4's space;
3. :func:`build_cost_model` fills the per-layer LUT and fits the learned correction on architectures measured
   end to end; :func:`validate` checks it on held-out architectures (MAPE, Spearman, share within +-10 %).
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from data_prep.build import load_dataset_info
from data_prep.config import DataConfig
from data_prep.features import feature_meta

from ..core.io import atomic_path, atomic_write_json
from ..core.progress import progress
from ..core.scales import sizes
from ..measure.costmodel import CostModel, LatencyLUT, isolate, trace_layers
from ..measure.devices import Device, HostCPU, LatencyStats
from ..measure.export import TimingConfig, time_calls, torch_threads
from ..models.baselines import BASELINES, build_baseline
from ..models.space import build_model

__all__ = ["OperatorGrid", "ProfilingConfig", "operator_cases", "profile_operators", "random_conv_net",
           "build_cost_model", "build_and_validate", "measure_models", "validate", "summarize_validation", "save_table",
           "call_trace", "sample_space_models", "baseline_models", "compare_backends", "fill_lut"]


@dataclass
class OperatorGrid:
    """The operator configurations to time (chapter 2). Conv1d uses ``c_in = c_out = channels``."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    kernels: tuple[int, ...] = (3, 5, 9, 15, 25)
    seq_lens: tuple[int, ...] = (62, 125, 250, 500, 1000)
    strides: tuple[int, ...] = (1, 2)
    rnn_hidden: tuple[int, ...] = (32, 64, 128)
    attn_dims: tuple[int, ...] = (32, 64, 128)
    linear_dims: tuple[int, ...] = (64, 256, 1024)
    batch: int = 1

    @classmethod
    def for_scale(cls, scale: str) -> OperatorGrid:
        return cls(**sizes("operator_grid", scale))


@dataclass
class ProfilingConfig:
    """Chapter 2's knobs: input size, how many architectures, and the per-operator latency budget of the rule."""

    n_features: int = 40
    n_frames: int = 251  # 5 s at chapter 1's 20-ms hop (centred frames)
    n_classes: int = 11
    n_train_archs: int = 80
    n_heldout_archs: int = 60
    rounds: int = 3  # interleaved measurement passes over all architectures
    # The runtime chapter 6 deploys to (ExecuTorch + XNNPACK): architectures measured end to end through it, some to
    # fit its correction on the eager LUT, the others to validate it (each is exported once, seconds apiece).
    n_runtime_train: int = 50
    n_runtime_heldout: int = 20
    # Latency statistic the LUT sums and the model predicts. On a shared machine interference only adds time, so
    # the minimum over many warm calls tracks the uncontended latency best; on a quiet device "median" is the norm.
    statistic: str = "min"
    # Rule threshold: one operator may take at most this share of ERSAM's 50 ms per 5-s segment.
    segment_budget_ms: float = 50.0
    max_op_share: float = 0.2
    grid: OperatorGrid = field(default_factory=OperatorGrid)

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> ProfilingConfig:
        """Sizes per scale; the input shape and class count follow chapter 1's features at that scale."""
        data = DataConfig.for_scale(scale)
        shape = dict(n_features=data.features.n_mels, n_classes=data.max_count + 1,
                     n_frames=data.features.n_frames(int(data.duration_s * data.sample_rate)))
        return cls(grid=OperatorGrid.for_scale(scale), **(shape | sizes("profiling", scale) | overrides))

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, scale: str, **overrides: Any) -> ProfilingConfig:
        """:meth:`for_scale` with the input shape and class count of the run's own features (chapter 1 may have built
        other ones than the scale's defaults, ``-p`` parameters): what chapter 2 profiles."""
        n_features, n_frames = feature_meta(run_dir, "logmel")["shape"]
        shape = dict(n_features=int(n_features), n_frames=int(n_frames),
                     n_classes=len(load_dataset_info(run_dir)["classes"]))
        return cls.for_scale(scale, **(shape | overrides))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.n_features, self.n_frames)

    @property
    def max_op_ms(self) -> float:
        return self.segment_budget_ms * self.max_op_share


class _Transposed(nn.Module):
    """(B, C, T) -> (B, T, C) before a sequence layer, as a network would feed it."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):  # noqa: ANN001
        y = self.layer(x.transpose(1, 2).contiguous())
        return y


def operator_cases(grid: OperatorGrid) -> list[dict[str, Any]]:
    """Every ``{op, channels, kernel, stride, seq_len, module, input_shape}`` of the grid (modules built here)."""
    b, cases = grid.batch, []
    for c, k, s, t in itertools.product(grid.channels, grid.kernels, grid.strides, grid.seq_lens):
        cases.append(dict(op="conv1d", channels=c, kernel=k, stride=s, seq_len=t,
                          module=nn.Conv1d(c, c, k, s, k // 2), input_shape=(b, c, t)))
    for c, k, t in itertools.product(grid.channels, (3, 9, 25), grid.seq_lens):
        cases.append(dict(op="conv1d_dw", channels=c, kernel=k, stride=1, seq_len=t,
                          module=nn.Conv1d(c, c, k, 1, k // 2, groups=c), input_shape=(b, c, t)))
    for c, t in itertools.product(grid.channels, grid.seq_lens):
        cases.append(dict(op="conv1d_pw", channels=c, kernel=1, stride=1, seq_len=t,
                          module=nn.Conv1d(c, c, 1), input_shape=(b, c, t)))
    for h, t, kind in itertools.product(grid.rnn_hidden, grid.seq_lens, ("lstm", "gru")):
        layer = (nn.LSTM if kind == "lstm" else nn.GRU)(h, h, batch_first=True)
        cases.append(dict(op=kind, channels=h, kernel=0, stride=1, seq_len=t, module=layer, input_shape=(b, t, h)))
    for e, t in itertools.product(grid.attn_dims, grid.seq_lens):
        layer = nn.MultiheadAttention(e, max(1, e // 32), batch_first=True)
        cases.append(dict(op="attention", channels=e, kernel=0, stride=1, seq_len=t,
                          module=_SelfAttention(layer), input_shape=(b, t, e)))
    for d in grid.linear_dims:
        cases.append(dict(op="linear", channels=d, kernel=0, stride=1, seq_len=1, module=nn.Linear(d, d),
                          input_shape=(b, d)))
    return cases


class _SelfAttention(nn.Module):
    def __init__(self, layer: nn.MultiheadAttention):
        super().__init__()
        self.layer = layer

    def forward(self, x):  # noqa: ANN001
        return self.layer(x, x, x, need_weights=False)[0]


def profile_operators(device: Device, grid: OperatorGrid) -> pd.DataFrame:
    """Time every operator of ``grid`` on ``device``; one row per case with MACs and latency statistics.

    A layer that two cases share (a kernel-1 ``conv1d`` is also a ``conv1d_pw``) is timed once and its statistics
    are reused, so the table never holds two different measurements under one key.
    """
    rows = []
    measured: dict[str, LatencyStats] = {}
    for case in progress(operator_cases(grid), desc="operators"):
        module, shape = case.pop("module"), case["input_shape"]
        rec = trace_layers(module, shape)[0]
        if rec.key not in measured:
            measured[rec.key] = device.measure(module, shape)
        stats = measured[rec.key]
        rows.append({k: v for k, v in case.items() if k != "input_shape"}
                    | {"key": rec.key, "macs": rec.macs, "in_shape": "x".join(map(str, shape))}
                    | _stats_row(stats))
    df = pd.DataFrame(rows)
    df["ns_per_mac"] = df["median"] * 1e6 / df["macs"].clip(lower=1)
    return df


def _stats_row(s: LatencyStats) -> dict[str, float]:
    row = {"count": s.count, "mean": s.mean, "var": s.var, "median": s.median, "p90": s.p90, "min": s.min}
    return row | ({"energy_mj": s.energy_mj} if s.energy_mj is not None else {})


def save_table(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Write a measurement table as CSV plus ``.meta.json`` (device metadata) atomically; an
    :class:`~ersam_lib.measure.devices.ImportedProfile` reads it back (a table from another device loads the same
    way)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    atomic_write_json(path.with_suffix(".meta.json"), metadata)
    return path


# --------------------------------------------------------------------------------------------------------------------
# Architectures, the cost model and its validation
# --------------------------------------------------------------------------------------------------------------------

def random_conv_net(rng: random.Random, n_features: int, n_classes: int) -> nn.Module:
    """A random 1-D conv net in the spirit of chapter 4's space (strided encoder, then context blocks), used to
    validate the cost model when no search space is given: plain/depthwise-separable convs, BN, ReLU/GELU,
    optional GRU or self-attention, mean over time, linear head."""
    layers: list[nn.Module] = []
    c = n_features
    for _ in range(rng.randint(1, 3)):  # encoder: strided convs
        c_out, k = rng.choice((16, 32, 48, 64, 96, 128)), rng.choice((3, 5, 7, 9))
        layers += [nn.Conv1d(c, c_out, k, rng.choice((1, 2)), k // 2), nn.BatchNorm1d(c_out), nn.ReLU()]
        c = c_out
    for _ in range(rng.randint(1, 4)):  # context: separable or plain convs
        k = rng.choice((3, 5, 9, 15))
        c_out = rng.choice((16, 32, 48, 64, 96, 128))
        if rng.random() < 0.5:
            layers += [nn.Conv1d(c, c, k, 1, k // 2, groups=c), nn.Conv1d(c, c_out, 1)]
        else:
            layers += [nn.Conv1d(c, c_out, k, 1, k // 2)]
        layers += [nn.BatchNorm1d(c_out), rng.choice((nn.ReLU, nn.GELU))()]
        c = c_out
    seq: nn.Module | None = None
    r = rng.random()
    if r < 0.25:
        seq = nn.GRU(c, c, batch_first=True)
    elif r < 0.45 and c % 16 == 0:
        seq = nn.MultiheadAttention(c, max(1, c // 32), batch_first=True)
    return _RandomNet(nn.Sequential(*layers), seq, nn.Linear(c, n_classes))


class _RandomNet(nn.Module):
    def __init__(self, convs: nn.Sequential, seq: nn.Module | None, head: nn.Linear):
        super().__init__()
        self.convs, self.seq, self.head = convs, seq, head

    def forward(self, x):  # noqa: ANN001
        h = self.convs(x).transpose(1, 2)  # (B, T, C)
        if isinstance(self.seq, nn.MultiheadAttention):
            h = self.seq(h, h, h, need_weights=False)[0]
        elif self.seq is not None:
            h = self.seq(h)[0]
        return self.head(h.mean(dim=1))


Named = tuple[str, nn.Module, tuple]


def sample_space_models(space: Any, n: int, rng: random.Random, tag: str,
                        exclude: Sequence[Named] = ()) -> list[Named]:
    """``n`` distinct architectures drawn from chapter 4's search space, as fresh static networks named
    ``<tag><i>-<arch_id>``; none of those in ``exclude`` (held-out sets stay disjoint from training sets)."""
    out: list[Named] = []
    seen: set[str] = {name.rsplit("-", 1)[-1] for name, _, _ in exclude}
    for _ in range(50 * n):
        arch = space.sample(rng)
        if arch.arch_id in seen:
            continue
        seen.add(arch.arch_id)
        model = build_model(arch, space.n_features, space.n_classes, attn_dim=space.attn_dim)
        out.append((f"{tag}{len(out)}-{arch.arch_id}", model.eval(), (1, space.n_features, space.n_frames)))
        if len(out) == n:
            return out
    raise ValueError(f"the space yielded only {len(out)} distinct architectures, wanted {n}")


def baseline_models(n_features: int, n_classes: int, n_frames: int) -> list[Named]:
    """The baselines of :mod:`ersam_lib.models.baselines` with fresh weights, for profiling."""
    return [(name, build_baseline(name, n_features, n_classes).eval(), (1, n_features, n_frames))
            for name in BASELINES]


def compare_backends(models: Sequence[Named], backends: Sequence[str], timing: Any, threads: int = 1
                     ) -> pd.DataFrame:
    """Latency of each model under each host backend (eager, ExecuTorch + XNNPACK, ONNX Runtime): one row per
    (model, backend) with the median, minimum and p90 in ms and the host's energy of the minimum (chapter 2 shows
    the medians; chapter 5 calibrates its energies on the MobileNetV2-style row)."""
    rows = []
    for backend in backends:
        dev = HostCPU(backend=backend, threads=threads, timing=timing)
        dev.prepare([(m, shape) for _, m, shape in models])
        for name, model, shape in progress(models, desc=backend):
            s = dev.measure(model, shape)
            rows.append({"model": name, "backend": backend, "median_ms": s.median, "min_ms": s.min,
                         "p90_ms": s.p90, "count": s.count, "energy_mj": dev.power.energy_mj(s.min, threads)})
    return pd.DataFrame(rows)


def fill_lut(lut: LatencyLUT, models: Sequence[tuple[str, nn.Module, tuple]], device: Device) -> int:
    """Time, alone on ``device``, every layer of ``models`` whose key is not in ``lut``; returns how many."""
    todo: dict[str, tuple[Any, nn.Module, dict]] = {}
    for _, model, shape in models:
        for rec, module, kwargs in trace_layers(model, shape, keep_modules=True):
            if rec.key not in lut and rec.key not in todo:
                todo[rec.key] = (rec, module, kwargs)
    for rec, module, kwargs in progress(todo.values(), desc="layers"):
        lut.add(rec, device.measure(isolate(rec, module, kwargs), rec.in_shape))
    return len(todo)


def measure_models(models: Sequence[tuple[str, nn.Module, tuple]], device: Device,
                   rounds: int = 1) -> list[LatencyStats]:
    """End-to-end latency of each ``(name, model, input_shape)``, measured in ``rounds`` interleaved passes over
    all models; the median of the per-round medians is kept, so a burst of load from another process spoils
    one round of a model, not its number."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    device.prepare([(m, shape) for _, m, shape in models])  # HostCPU + ExecuTorch: export them all first, in parallel
    per_round = [[device.measure(m, shape) for _, m, shape in models]
                 for _ in progress(range(rounds), desc="rounds")]
    return [_merge([r[i] for r in per_round]) for i in range(len(models))]


def _merge(stats: Sequence[LatencyStats]) -> LatencyStats:
    """Pool repeated measurements of one model: counts add, mean/var pool, median = median of round medians; the
    rounds' own minima and medians stay in the metadata (``round_min``, ``round_median``): how well a measurement
    repeats bounds how well any predictor can agree with it."""
    if len(stats) == 1:
        return stats[0]
    n = np.array([s.count for s in stats], dtype=float)
    mean = float(np.sum(n * [s.mean for s in stats]) / n.sum())
    var = float(np.sum(n * (np.array([s.var for s in stats]) + (np.array([s.mean for s in stats]) - mean) ** 2))
                / n.sum())
    return LatencyStats(count=int(n.sum()), mean=mean, var=var, median=float(np.median([s.median for s in stats])),
                        p90=float(np.median([s.p90 for s in stats])), min=float(min(s.min for s in stats)),
                        energy_mj=stats[0].energy_mj, metadata=stats[0].metadata | {
                            "rounds": len(stats), "round_min": [s.min for s in stats],
                            "round_median": [s.median for s in stats]})


def build_cost_model(device: Device, train: Sequence[tuple[str, nn.Module, tuple]],
                     layer_sources: Sequence[tuple[str, nn.Module, tuple]] = (), seed: int = 0,
                     lut: LatencyLUT | None = None, rounds: int = 1, statistic: str = "median",
                     lut_device: Device | None = None, correction: str = "forest",
                     measured: Sequence[LatencyStats] | None = None) -> tuple[CostModel, pd.DataFrame]:
    """LUT over the layers of ``train`` and ``layer_sources`` (OFA profiles every layer its space can produce),
    plus the random-forest correction fitted on ``train`` measured end to end (``rounds`` interleaved passes),
    both on the latency ``statistic`` ("median" or "min"). Returns the model and the training table.

    ``measured`` passes ``train``'s end-to-end stats measured already, in the same :func:`measure_models` rounds as
    the architectures :func:`validate` will score (chapter 2): a host that drifts between two measuring sessions
    would otherwise show up as a prediction bias.

    ``lut_device`` times the layers when it differs from ``device``, the runtime measured end to end: chapter 5
    predicts the deployed runtime (ExecuTorch, whose delegate fuses layers, so it cannot be timed layer by layer)
    from chapter 2's eager LUT, with a correction fitted on ExecuTorch's end-to-end latency: there
    ``correction="ridge"``, see :meth:`~ersam_lib.measure.costmodel.CostModel.fit_correction`."""
    lut = lut or LatencyLUT(metadata=(lut_device or device).metadata())
    fill_lut(lut, [*train, *layer_sources], lut_device or device)  # before CostModel(): its fallback reads the LUT
    stats = _given_or_measured(measured, train, device, rounds)
    latency = [getattr(s, statistic) for s in stats]
    cm = CostModel(lut, *_active_power(device, stats), statistic=statistic)
    feats = [cm.features(m, shape) for _, m, shape in train]
    cm.fit_correction(feats, latency, seed=seed, kind=correction)
    table = pd.DataFrame([{"name": n} | f | {"measured_ms": t} for (n, _, _), f, t in zip(train, feats, latency)])
    return cm, table


def build_and_validate(device: Device, train: Sequence[tuple[str, nn.Module, tuple]],
                       heldout: Sequence[tuple[str, nn.Module, tuple]], rounds: int = 1,
                       **build: Any) -> tuple[CostModel, pd.DataFrame, pd.DataFrame]:
    """:func:`build_cost_model` on ``train`` and :func:`validate` on ``heldout``, both sets timed end to end in the
    same interleaved rounds (chapter 2), so a host that drifts between two measuring sessions cannot pass for a
    prediction error. ``build`` goes to :func:`build_cost_model`. Returns the model, its training table and the
    validation table."""
    stats = measure_models([*train, *heldout], device, rounds)
    cm, table = build_cost_model(device, train, measured=stats[:len(train)], **build)
    return cm, table, validate(cm, heldout, device, stats=stats[len(train):])


def _active_power(device: Device, stats: Sequence[LatencyStats]) -> tuple[float, str]:
    """(mW, source): the host's power model, or the mean power a phone measured over the training runs."""
    if device.power is not None:
        return device.power.active_mw_per_core * int(device.metadata().get("threads", 1)), device.power.source
    energies = [(s.energy_mj, s.median) for s in stats if s.energy_mj is not None]
    if not energies:
        raise ValueError(f"device {device.name!r} has no power model and measured no energy")
    return float(np.mean([e / t * 1000.0 for e, t in energies])), f"measured on {device.name}: battery I x V"


def _given_or_measured(stats: Sequence[LatencyStats] | None, models: Sequence[tuple[str, nn.Module, tuple]],
                       device: Device, rounds: int) -> Sequence[LatencyStats]:
    if stats is None:
        return measure_models(models, device, rounds)
    if len(stats) != len(models):
        raise ValueError(f"got {len(stats)} measurements for {len(models)} models")
    return stats


def validate(cost_model: CostModel, models: Sequence[tuple[str, nn.Module, tuple]], device: Device,
             rounds: int = 1, stats: Sequence[LatencyStats] | None = None) -> pd.DataFrame:
    """Measure ``models`` end to end on ``device`` (or take their ``stats``, measured in the same rounds as the
    cost model's training architectures) and set them beside the cost model's predictions (chapter 2)."""
    rows = []
    for (name, model, shape), s in zip(models, _given_or_measured(stats, models, device, rounds)):
        est = cost_model.predict(model, shape)
        per_round = s.metadata.get(f"round_{cost_model.statistic}", [])
        repeat = {f"round{i + 1}_ms": v for i, v in enumerate(per_round[:2])} if len(per_round) >= 2 else {}
        rows.append({"name": name, "measured_ms": getattr(s, cost_model.statistic), "measured_var": s.var,
                     "measured_energy_mj": device.energy_mj(s)} | repeat | est.to_dict())
    df = pd.DataFrame(rows)
    df["rel_err"] = (df["latency_ms"] - df["measured_ms"]) / df["measured_ms"]
    df["lut_rel_err"] = (df["lut_latency_ms"] - df["measured_ms"]) / df["measured_ms"]
    return df


def summarize_validation(df: pd.DataFrame) -> dict[str, float]:
    """MAPE, Spearman rank correlation and share within +-10 % (predictor and LUT sum), FLOPs' Spearman; with two
    or more measurement rounds also the measurement's own repeatability: the share of architectures whose first two
    rounds agree within +-10 % (``repeat_within10``) and their Spearman (``repeat_spearman``), the ceiling a
    predictor's agreement with a single measurement can reach."""
    from scipy.stats import spearmanr

    if len(df) < 3:
        raise ValueError(f"need >= 3 validated architectures, got {len(df)}")

    def rho(a: str, b: str) -> float:
        return float(spearmanr(df[a], df[b]).statistic)

    out = {"n": int(len(df)), "mape": float(df["rel_err"].abs().mean()),
           "within10": float((df["rel_err"].abs() <= 0.10).mean()), "spearman": rho("latency_ms", "measured_ms"),
           "lut_mape": float(df["lut_rel_err"].abs().mean()),
           "lut_within10": float((df["lut_rel_err"].abs() <= 0.10).mean()),
           "macs_spearman": rho("macs", "measured_ms"),
           "median_abs_err": float(df["rel_err"].abs().median()),
           "max_abs_err": float(df["rel_err"].abs().max())}
    if {"round1_ms", "round2_ms"} <= set(df.columns):
        repeat = (df["round2_ms"] - df["round1_ms"]) / df["round1_ms"]
        out |= {"repeat_within10": float((repeat.abs() <= 0.10).mean()), "repeat_spearman": rho("round1_ms", "round2_ms")}
    return out


def call_trace(model: nn.Module, input_shape: Sequence[int], n_calls: int = 30, threads: int = 1) -> list[float]:
    """Eager latency (ms) of each of the first ``n_calls`` calls of ``model``, no warm-up: why warm-up matters."""
    cfg = TimingConfig(warmup=0, repeats=n_calls, min_repeats=n_calls, max_seconds=math.inf)
    x = torch.randn(*input_shape)
    with torch_threads(threads), torch.inference_mode():
        return time_calls(lambda: model.eval()(x), cfg)
