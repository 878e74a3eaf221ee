"""The accuracy-energy frontier of chapter 5: finalists and baselines on one device, one split, one protocol.

- :func:`pick_finalists` spreads ``k`` architectures of a search front along the energy axis and adds one at each
  baseline's energy;
- :func:`measure_latency` times a network with chapter 2's protocol on the host's runtimes (eager PyTorch and
  ExecuTorch + XNNPACK, the runtime chapter 6 deploys to); :func:`measure_latencies` times several, their exports
  run in parallel;
- :func:`frontier_row` puts one trained model's test scores beside its predicted and measured costs, energies
  calibrated like the search's (:class:`~ersam_lib.costmodel.EnergyCalibration`);
- :func:`save_chosen` / :func:`load_chosen` hand the chosen models to chapter 6 through ``RUN_DIR/search/models/``:
  a state dict and a model card (architecture, metrics, costs, feature config, label set, manifest hash) each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from data_prep.build import load_dataset_info

from .baselines import build_baseline
from .complexity import count_params
from .costmodel import CostModel, EnergyCalibration
from .countnet import INPUT_SHAPE, load_published, predict_counts
from .data import WaveformDataset
from .devices import HostCPU
from .export import TimingConfig
from .io import ArtifactError, atomic_torch_save, atomic_write_json, read_json, torch_load
from .rundir import damaged, feature_dir, stage_dir
from .scales import check_scale
from .space import Arch, build_model

__all__ = [
    "CARD_KIND", "CHOICES", "FrontierConfig", "PEER_SPLITS", "frontier_row", "load_chosen", "measure_latencies",
    "measure_latency", "peer_inputs", "peer_row", "pick_chosen", "pick_finalists", "save_chosen",
]

CARD_KIND = "ersam-model-card"
CARD_VERSION = 1


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
    peers: tuple[str, ...] = ("F-CRNN", "RNN")  # CountNet's published models (ersam_lib.countnet)
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
        sizes = {"smoke": dict(n_seeds=1, n_finalists=2, baselines=("tcresnet8",), backends=("executorch",),
                               strategies=("random", "evolution", "tpe", "nsga2"), peers=("F-CRNN",),
                               peer_backends=("eager",)),
                 "tutorial": {},
                 "paper": dict(n_finalists=8, strategies=cls.strategies + ("gp",))}[check_scale(scale)]
        return cls(**(sizes | overrides))


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
    host's energy of the minimum (``<backend>_energy_mj_device``, :class:`~ersam_lib.devices.PowerModel`)."""
    return measure_latencies([(model, input_shape, backends)], timing, threads)[0]


def measure_latencies(jobs: Sequence[tuple[nn.Module, tuple[int, ...], tuple[str, ...]]],
                      timing: TimingConfig | None = None, threads: int = 1,
                      min_parallel: int = 4) -> list[dict[str, float]]:
    """:func:`measure_latency` of each ``(model, input_shape, backends)`` job, in order. The ExecuTorch programs are
    exported first, in parallel (:meth:`~ersam_lib.devices.HostCPU.prepare`, one process per core) when there are
    at least ``min_parallel`` of them: an export is 10 to 90 s of single-threaded Python for chapter 5's baselines
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
    """CountNet's published model ``name`` (:data:`ersam_lib.countnet.PUBLISHED`) as the peer row of the frontier:
    its accuracy and MAE on ``splits`` of the run (rendered to waveforms and preprocessed as upstream does: |STFT|,
    its own scaler; real speech is what it was trained on), its size, and its latency on ``backends`` measured with
    chapter 2's protocol on its own input (``(1, 500, 201)``; the |STFT| is left out, as our models' log-mel is).
    It was trained on LibriCount's counts 0..10, so on a run with a smaller K its predictions above K count as
    errors. ``inputs`` (from :func:`peer_inputs`) saves rendering the splits again for each peer; ``model`` (from
    :func:`~ersam_lib.countnet.load_published`) and ``measured`` (its :func:`measure_latencies` row) save loading
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
    """Save one chosen model as ``RUN_DIR/search/models/<name>.pt`` (state dict) and ``<name>.json`` (its card):
    architecture (a searched ``arch`` or a ``baseline`` name), metrics, costs, feature config, label set and the
    data set's manifest hash (chapter 5 writes, chapter 6 reads with :func:`load_chosen`)."""
    if (arch is None) == (baseline is None):
        raise ValueError("give either the searched arch or the baseline name of the model")
    info = load_dataset_info(run_dir)
    folder = stage_dir(run_dir, "search") / "models"
    features = read_json(feature_dir(run_dir, "logmel") / "meta.json")
    x_shape = features["shape"]
    card = {"kind": CARD_KIND, "version": CARD_VERSION, "name": name,
            "architecture": ({"arch": arch.to_dict(), "attn_dim": attn_dim} if arch is not None
                             else {"baseline": baseline}),
            "input": {"kind": "logmel", "n_features": int(x_shape[0]), "n_frames": int(x_shape[1]),
                      "feature_config": features["feature_config"], "mean": features["mean"], "std": features["std"]},
            "classes": list(info["classes"]), "class_set": info["class_set"],
            "manifest_sha256": info["manifest_sha256"],
            "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float, str, type(None)))},
            "report": {k: v for k, v in (report or {}).items() if k != "history"}}
    atomic_torch_save(model.state_dict(), folder / f"{name}.pt")
    atomic_write_json(folder / f"{name}.json", card)
    return folder / f"{name}.json"


CHOICES = ("budget", "most_accurate")


def pick_chosen(chosen: dict[str, Any], role: str) -> tuple[str, str]:
    """``(name, role)`` of the model chapter 6 deploys from chapter 5's ``chosen.json``.

    ``budget`` is absent when no finalist's *measured* energy fits the default budget (the search holds the budget on
    the cost model's prediction; a loaded host can measure more): chapter 6 then deploys ``most_accurate`` and the
    returned role says so."""
    if role not in CHOICES:
        raise ValueError(f"MODEL must be one of {CHOICES}, got {role!r}")
    for candidate in (role, *CHOICES):
        if candidate in chosen:
            return chosen[candidate], candidate
    raise ValueError("chapter 5 chose no searched model (chosen.json has neither 'budget' nor 'most_accurate')")


def load_chosen(run_dir: str | os.PathLike, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, card)`` of a model chapter 5 chose, in eval mode (chapter 6)."""
    folder = stage_dir(run_dir, "search", create=False) / "models"
    card_path = folder / f"{name}.json"
    if not card_path.exists():
        raise FileNotFoundError(f"{card_path} is missing: run chapter 05 with the same RUN_DIR first")
    card = read_json(card_path)
    if card.get("kind") != CARD_KIND:
        raise ValueError(f"{card_path} is not a model card of this book (kind {card.get('kind')!r})")
    n_features, n_classes = card["input"]["n_features"], len(card["classes"])
    arch = card["architecture"]
    if "arch" in arch:
        model = build_model(Arch.from_dict(arch["arch"]), n_features, n_classes, int(arch["attn_dim"]))
    else:
        model = build_baseline(arch["baseline"], n_features, n_classes)
    weights = folder / f"{name}.pt"
    try:
        model.load_state_dict(torch_load(weights))
    except (ArtifactError, FileNotFoundError) as e:
        raise damaged(weights, run_dir, "search", str(e)) from None
    except RuntimeError as e:  # weights of another shape than the card describes
        raise damaged(weights, run_dir, "search", f"does not fit its card ({str(e).splitlines()[0][:200]})") from None
    return model.eval(), card
