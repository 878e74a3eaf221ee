"""The accuracy-energy frontier of chapter 5: finalists and baselines on one device, one split, one protocol.

- :func:`pick_finalists` spreads ``k`` architectures of a search front along the energy axis and adds one at each
  baseline's energy;
- :func:`measure_latency` times a network with chapter 2's protocol on the host's runtimes (eager PyTorch and
  ExecuTorch + XNNPACK, the runtime chapter 6 deploys to); :func:`measure_latencies` times several, their exports
  run in parallel;
- :func:`frontier_row` puts one trained model's test scores beside its predicted and measured costs, energies
  calibrated like the search's (:class:`~ersam_lib.measure.costmodel.EnergyCalibration`);
- :func:`dominance` decides, per baseline, whether a finalist at no more energy is more accurate, by McNemar's exact
  test on the test windows (:mod:`ersam_lib.measure.uncertainty`), not by the difference alone;
- :func:`save_chosen` / :func:`load_chosen` hand the chosen models to chapter 6 through ``RUN_DIR/search/models/``:
  a state dict and a :class:`~ersam_lib.core.cards.ModelCard` each; :class:`~ersam_lib.core.cards.Chosen` says which.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from data_prep.build import load_dataset_info

from ..core.cards import CardError, ModelCard, claim
from ..core.io import ArtifactError, atomic_torch_save, read_json, torch_load
from ..core.rundir import damaged, feature_dir, missing_message, stage_dir
from ..core.scales import sizes
from ..measure.complexity import count_params
from ..measure.costmodel import CostModel, EnergyCalibration
from ..measure.data import WaveformDataset
from ..measure.devices import HostCPU
from ..measure.export import TimingConfig
from ..measure.uncertainty import LEVEL, mcnemar, rate_interval
from ..models.baselines import build_baseline
from ..models.countnet import INPUT_SHAPE, load_published, predict_counts
from ..models.space import Arch, build_model

__all__ = [
    "FrontierConfig", "PEER_SPLITS", "VERDICTS", "dominance", "frontier_row", "load_chosen", "measure_latencies",
    "measure_latency", "peer_inputs", "peer_row", "pick_finalists", "save_chosen",
]


@dataclass(frozen=True)
class FrontierConfig:
    """Chapter 5's sizes: strategies compared and their seeds, where ERSAM's hard energy budgets sit (quantiles of
    the energies the comparison scored: a cheap, a middle and a rich budget), how many front architectures become
    finalists, the baselines and the published peers, and the runtimes measured."""

    strategies: tuple[str, ...] = ("random", "evolution", "regularized_evolution", "tpe", "nsga2")
    n_seeds: int = 3
    budget_quantiles: tuple[float, ...] = (0.2, 0.5, 0.8)
    n_finalists: int = 4
    baselines: tuple[str, ...] = ("countnet_crnn", "countnet_fcrnn", "tcresnet8", "tcresnet14", "mobilenetv2")
    backends: tuple[str, ...] = ("eager", "executorch")
    peers: tuple[str, ...] = ("F-CRNN", "RNN")  # CountNet's published models (ersam_lib.models.countnet)
    peer_backends: tuple[str, ...] = ("eager", "executorch")  # the RNN lowers to XNNPACK too slowly: eager only

    def __post_init__(self) -> None:
        if self.n_seeds < 1 or self.n_finalists < 1 or not self.strategies:
            raise ValueError(f"need n_seeds >= 1, n_finalists >= 1 and a strategy; got {self}")
        if any(not 0 < q < 1 for q in self.budget_quantiles):
            raise ValueError(f"budget quantiles must lie in (0, 1), got {self.budget_quantiles}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> FrontierConfig:
        """``smoke``: one seed, two finalists, one cheap baseline, measured through ExecuTorch only (every export
        costs seconds); ``tutorial``/``paper``: the above (``paper`` adds the GP-based Bayesian optimiser, minutes
        per hundred proposals on a CPU)."""
        return cls(**(sizes("frontier", scale) | overrides))


def pick_finalists(front: pd.DataFrame, k: int, x: str = "energy_mj", anchors: Sequence[float] = ()) -> pd.DataFrame:
    """Rows of a Pareto ``front`` (sorted by ``x``): ``k`` spread evenly along ``x``, always its two ends, and for
    each of ``anchors`` (a baseline's energy, say) the front's most accurate row with ``x`` at most the anchor, so
    that a finalist meets each baseline at its own cost (chapter 5). On a front accuracy grows with ``x``: that row
    is the last one at or below the anchor; an anchor below the whole front adds nothing."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    front = front.sort_values(x).reset_index(drop=True)
    spread = np.linspace(0, len(front) - 1, min(k, len(front))).round().astype(int)
    under = [int(np.searchsorted(front[x].to_numpy(), a, side="right")) - 1 for a in anchors]
    return front.iloc[np.unique(np.concatenate([spread, [i for i in under if i >= 0]]).astype(int))].reset_index(
        drop=True)


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], backends: tuple[str, ...] = ("eager",
                    "executorch"), timing: TimingConfig | None = None, threads: int = 1) -> dict[str, float]:
    """Latency (ms) of one forward pass per backend with chapter 2's protocol (one thread, warm-up, repeats): the
    minimum over repeats (``<backend>_ms``, the statistic chapter 2's cost model predicts) and the median, plus the
    host's energy of the minimum (``<backend>_energy_mj_device``, :class:`~ersam_lib.measure.devices.PowerModel`)."""
    return measure_latencies([(model, input_shape, backends)], timing, threads)[0]


def measure_latencies(jobs: Sequence[tuple[nn.Module, tuple[int, ...], tuple[str, ...]]],
                      timing: TimingConfig | None = None, threads: int = 1,
                      min_parallel: int = 4) -> list[dict[str, float]]:
    """:func:`measure_latency` of each ``(model, input_shape, backends)`` job, in order. The ExecuTorch programs are
    exported first, in parallel (:meth:`~ersam_lib.measure.devices.HostCPU.prepare`, one process per core) when there
    are at least ``min_parallel`` of them: an export is 10 to 90 s of single-threaded Python for chapter 5's baselines
    and the published F-CRNN (list the slowest first), timing one a few seconds."""
    backends = list(dict.fromkeys(b for _, _, bs in jobs for b in bs))
    devices = {b: HostCPU(backend=b, threads=threads, timing=timing) for b in backends}
    for b, device in devices.items():
        device.prepare([(m, shape) for m, shape, bs in jobs if b in bs], min_models=min_parallel)
    out = []
    for model, shape, bs in jobs:
        row: dict[str, float] = {}
        for b in bs:
            stats = devices[b].measure(model, shape)
            row |= {f"{b}_ms": stats.min, f"{b}_median_ms": stats.median,
                    f"{b}_energy_mj_device": devices[b].power.energy_mj(stats.min, threads)}
        out.append(row)
    return out


def frontier_row(name: str, kind: str, model: nn.Module, report: dict[str, Any], cost_model: CostModel,
                 calibration: EnergyCalibration, input_shape: tuple[int, ...], measured: dict[str, float] | None = None,
                 runtime: str = "executorch") -> dict[str, Any]:
    """One row of the frontier table: test scores from ``report`` (``test_acc``, ``test_mae``, ``test_level_acc``)
    and costs. ``latency_ms``/``energy_mj`` are the ``runtime``'s measurement when ``measured`` has it (energies
    calibrated like the search's), else the cost model's prediction; the prediction is kept in ``*_predicted``
    and every measured figure in ``measured_*``."""
    est = cost_model.predict(model, input_shape)
    params = count_params(model)
    row = {"name": name, "kind": kind, "params": params, "memory_kb": params / 1000.0,
           "memory_kb_float": 4 * params / 1000.0, "peak_act_kb_float": est.peak_activation_bytes / 1000.0,
           "macs": est.macs, "latency_ms_predicted": est.latency_ms, "energy_mj_predicted": calibration(est.energy_mj),
           "acc": report["test_acc"], "error": 1 - report["test_acc"], "mae": report["test_mae"],
           **_acc_bounds(report["test_acc"], report["test_n"]),
           "level_acc": report.get("test_level_acc"), "real_acc": report.get("real_test_acc"),
           "real_mae": report.get("real_test_mae")}
    for k, v in (measured or {}).items():
        row[f"measured_{k}"] = v
    if f"{runtime}_ms" in (measured or {}):
        row |= {"latency_ms": measured[f"{runtime}_ms"], "energy_mj_device": measured[f"{runtime}_energy_mj_device"],
                "energy_mj": calibration(measured[f"{runtime}_energy_mj_device"]), "cost_source": "measured"}
    else:
        row |= {"latency_ms": est.latency_ms, "energy_mj_device": est.energy_mj,
                "energy_mj": calibration(est.energy_mj), "cost_source": "predicted"}
    return row


def _acc_bounds(acc: float, n: int) -> dict[str, float]:
    """The exact 95 % interval of a test accuracy measured on ``n`` windows (``acc_low``, ``acc_high``)."""
    iv = rate_interval(round(acc * n), n)
    return {"acc_low": iv.low, "acc_high": iv.high}


# A baseline's verdict in chapter 5: what the most accurate finalist at no more energy makes of it.
VERDICTS = ("dominated", "matched at no more energy", "more accurate than every finalist at its energy",
            "no finalist at its energy")


def dominance(table: pd.DataFrame, predictions: Mapping[str, np.ndarray], y_true: np.ndarray,
              level: float = LEVEL) -> pd.DataFrame:
    """Per baseline of the frontier ``table``: the most accurate finalist (``kind == "searched"``) at no more energy,
    the accuracy difference finalist - baseline on the same test windows with its interval, McNemar's p-value, and
    the verdict (:data:`VERDICTS`): *dominated* only where the test finds the finalist more accurate at ``level``,
    *matched* where the two are not distinguishable (the finalist still costs no more energy). ``predictions`` holds
    each model's test predictions by name, in the order of ``y_true`` (chapter 5)."""
    searched = table[table["kind"] == "searched"]
    rows = []
    for _, b in table[table["kind"] == "baseline"].iterrows():
        row: dict[str, Any] = {"baseline": b["name"], "energy_mj": b["energy_mj"], "acc": b["acc"]}
        fits = searched[searched["energy_mj"] <= b["energy_mj"]]
        if fits.empty:
            rows.append(row | {"verdict": VERDICTS[3]})
            continue
        f = fits.loc[fits["acc"].idxmax()]
        t = mcnemar(predictions[f["name"]] == y_true, predictions[b["name"]] == y_true, level)
        verdict = VERDICTS[1] if not t.decided else VERDICTS[0] if t.diff.value > 0 else VERDICTS[2]
        rows.append(row | {"finalist": f["name"], "finalist_energy_mj": f["energy_mj"], "finalist_acc": f["acc"],
                           **t.points("diff_points"), "p": t.p_value, "verdict": verdict})
    return pd.DataFrame(rows)


PEER_SPLITS: tuple[str, ...] = ("real_test", "real_test_other")


def peer_inputs(run_dir: str | os.PathLike, splits: tuple[str, ...] = PEER_SPLITS) -> dict[str, tuple[np.ndarray,
                                                                                                      np.ndarray]]:
    """``{split: (waveforms (N, samples), labels (N,))}``: the run's ``splits`` rendered once, for every peer of
    :func:`peer_row` (rendering is most of what scoring a published model costs)."""
    out = {}
    for split in splits:
        waves = WaveformDataset(run_dir, split)
        out[split] = (np.stack([waves[i][0].numpy() for i in range(len(waves))]),
                      waves.rows["label"].to_numpy(np.int64))
    return out


def peer_row(run_dir: str | os.PathLike, name: str, splits: tuple[str, ...] = PEER_SPLITS,
             backends: tuple[str, ...] = ("eager",), timing: TimingConfig | None = None,
             calibration: EnergyCalibration | None = None, runtime: str = "eager",
             inputs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, model: nn.Module | None = None,
             measured: dict[str, float] | None = None) -> dict[str, Any]:
    """CountNet's published model ``name`` (:data:`ersam_lib.models.countnet.PUBLISHED`) as the peer row of the
    frontier: its accuracy and MAE on ``splits`` of the run (rendered to waveforms and preprocessed as upstream does:
    |STFT|, its own scaler; real speech is what it was trained on), its size, and its latency on ``backends`` measured
    with chapter 2's protocol on its own input (``(1, 500, 201)``; the |STFT| is left out, as our models' log-mel is).
    It was trained on LibriCount's counts 0..10, so on a run with a smaller K its predictions above K count as
    errors. ``inputs`` (from :func:`peer_inputs`) saves rendering the splits again for each peer; ``model`` (from
    :func:`~ersam_lib.models.countnet.load_published`) and ``measured`` (its :func:`measure_latencies` row) save loading
    and timing it again."""
    model = model if model is not None else load_published(name)
    row: dict[str, Any] = {"name": f"CountNet {name} (published)", "kind": "published",
                           "params": count_params(model), "memory_kb": count_params(model) / 1000.0}
    inputs = inputs if inputs is not None and set(splits) <= set(inputs) else peer_inputs(run_dir, splits)
    for split in splits:
        x, y = inputs[split]
        pred = predict_counts(model, x)
        key = "real" if split == "real_test" else split
        row |= {f"{key}_acc": float(np.mean(pred == y)), f"{key}_mae": float(np.mean(np.abs(pred - y))),
                f"{key}_n": int(len(y))}
    measured = measured if measured is not None else measure_latency(model, INPUT_SHAPE, backends, timing)
    row |= {f"measured_{k}": v for k, v in measured.items()}
    if f"{runtime}_ms" in measured and calibration is not None:
        row |= {"latency_ms": measured[f"{runtime}_ms"], "energy_mj_device": measured[f"{runtime}_energy_mj_device"],
                "energy_mj": calibration(measured[f"{runtime}_energy_mj_device"]), "cost_source": f"measured {runtime}"}
    else:  # not timed on the deployed runtime: no point on the energy axis
        row |= {"latency_ms": np.nan, "energy_mj_device": np.nan, "energy_mj": np.nan, "cost_source": "none"}
    return row


# --------------------------------------------------------------------------------------------- hand-off to chapter 6
def save_chosen(run_dir: str | os.PathLike, name: str, model: nn.Module, row: dict[str, Any],
                arch: Arch | None = None, baseline: str | None = None, report: dict[str, Any] | None = None,
                attn_dim: int = 32) -> Path:
    """Save one chosen model as ``RUN_DIR/search/models/<name>.pt`` (state dict) and its card ``<name>.json``
    (:class:`~ersam_lib.core.cards.ModelCard`: architecture, a searched ``arch`` or a ``baseline`` name; the log-mel
    input and the front end it was trained on; label set, manifest hash, metrics and training report); chapter 5
    writes, chapter 6 reads with :func:`load_chosen`."""
    if (arch is None) == (baseline is None):
        raise ValueError("give either the searched arch or the baseline name of the model")
    info = load_dataset_info(run_dir)
    folder = stage_dir(run_dir, "search") / "models"
    meta = read_json(feature_dir(run_dir, "logmel") / "meta.json")
    n_features, n_frames = (int(n) for n in meta["shape"])
    features = {"kind": "logmel", "feature_config": meta["feature_config"], "mean": meta["mean"], "std": meta["std"],
                "n_features": n_features, "n_frames": n_frames}
    architecture = {"arch": arch.to_dict(), "attn_dim": attn_dim} if arch is not None else {"baseline": baseline}
    weights = folder / f"{name}.pt"
    claim(weights)
    atomic_torch_save(model.state_dict(), weights)
    card = ModelCard.describe(
        weights, name=name, architecture=architecture, classes=tuple(info["classes"]), class_set=info["class_set"],
        manifest_sha256=info["manifest_sha256"], features=features,
        input={"kind": "logmel", "shape": [1, n_features, n_frames], "dtype": "float32"},
        metrics={k: v for k, v in row.items() if isinstance(v, (int, float, str, type(None)))},
        report={k: v for k, v in (report or {}).items() if k != "history"})
    return card.save(folder)


def load_chosen(run_dir: str | os.PathLike, name: str) -> tuple[nn.Module, ModelCard]:
    """``(model, card)`` of a model chapter 5 chose, in eval mode (chapter 6); a missing, damaged or replaced file is
    one line naming it and chapter 5's command."""
    weights = stage_dir(run_dir, "search", create=False) / "models" / f"{name}.pt"
    if not weights.exists():
        raise FileNotFoundError(missing_message(weights, run_dir, "search"))
    try:
        card = ModelCard.load(weights)
    except CardError as e:
        raise damaged(weights, run_dir, "search", str(e)) from None
    arch = card.architecture
    n_features, n_classes = card.features["n_features"], len(card.classes)
    if "arch" in arch:
        model = build_model(Arch.from_dict(arch["arch"]), n_features, n_classes, int(arch["attn_dim"]))
    else:
        model = build_baseline(arch["baseline"], n_features, n_classes)
    try:
        model.load_state_dict(torch_load(weights))
    except (ArtifactError, FileNotFoundError) as e:
        raise damaged(weights, run_dir, "search", str(e)) from None
    except RuntimeError as e:  # weights of another shape than the card describes
        raise damaged(weights, run_dir, "search", f"does not fit its card ({str(e).splitlines()[0][:200]})") from None
    return model.eval(), card
