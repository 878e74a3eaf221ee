"""Chapter 5's objectives for a run folder: chapter 4's supernet, chapter 1's features, chapter 2's cost model."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ...core.io import ArtifactError, read_json
from ...core.rundir import require, run_file
from ...measure.costmodel import CostModel, EnergyCalibration
from ...measure.data import load_feature_data, subset
from ...models.space import Arch, SearchSpace
from ...models.supernet import evaluate_arch, load_supernet
from .objectives import Objectives, predicted_costs

__all__ = ["RunSearch", "run_search_setup"]


@dataclass
class RunSearch:
    """What chapter 5 searches in one run folder: the space and trained supernet of chapter 4, chapter 1's features,
    chapter 2's cost model with the energy calibration, and the cached objectives (:func:`run_search_setup`)."""

    space: SearchSpace
    supernet: Any
    data: Any
    cost_model: CostModel
    calibration: EnergyCalibration
    objectives: Objectives
    info: dict[str, Any]


def run_search_setup(run_dir: str | os.PathLike, runtime: str = "executorch", n_bn_batches: int = 8,
                     bn_batch_size: int = 128, reference: str = "mobilenetv2", reference_mj: float = 13.9,
                     cache: bool = True) -> RunSearch:
    """Chapter 5's objectives for a run: inherited accuracy after BN recalibration on ``n_bn_batches`` x
    ``bn_batch_size`` training mixtures (the same ones for every architecture) scored on the whole validation
    split; latency, memory and energy predicted by chapter 2's cost model of ``runtime`` (ExecuTorch, what chapter
    6 deploys; ``"eager"`` for PyTorch). The energy is calibrated so that the ``reference`` baseline, as chapter 2
    *measured* it on the same runtime (``profiling/backends.csv``, the minimum over repeats), costs
    ``reference_mj`` (:class:`~ersam_lib.measure.costmodel.EnergyCalibration`; the device's own figure stays in
    ``energy_mj_device``). With ``cache`` the objectives live in ``RUN_DIR/search/objectives.json``, tagged with
    what they were computed from, so a re-run reuses every evaluation; a cache made from another supernet, cost model
    or calibration (an earlier chapter ran again) is stale: it is set aside with a printed line and scored afresh."""
    from torch.utils.data import DataLoader

    data = load_feature_data(run_dir)
    supernet, space, info = load_supernet(run_dir)
    cost_model = CostModel.load(run_dir, runtime=runtime)
    backends = pd.read_csv(require(run_dir, "backends"))
    ref = backends[(backends["model"] == reference) & (backends["backend"] == runtime)]
    if ref.empty:
        raise ValueError(f"{run_file(run_dir, 'backends')} has no {reference!r} row for {runtime!r}: chapter 2 "
                         f"measures the calibration reference; rerun it")
    calibration = EnergyCalibration.to_reference(float(ref["energy_mj"].iloc[0]), reference_mj)
    # Materialise the BN batches and the validation split once: every architecture reads the same tensors.
    bn_ds = subset(data.train, n_bn_batches * bn_batch_size, seed=0)
    bn = [b for b in DataLoader(bn_ds, batch_size=bn_batch_size)]
    val = [b for b in DataLoader(data.val, batch_size=512)]

    predict = predicted_costs(cost_model, space)

    def cost(arch: Arch) -> dict[str, float]:
        c = predict(arch)
        return c | {"energy_mj_device": c["energy_mj"], "energy_mj": calibration(c["energy_mj"])}

    correction = run_file(run_dir, "correction" if runtime == "eager" else f"correction_{runtime}")
    tag = (f"supernet={_weights_digest(supernet)} runtime={runtime} "
           f"costmodel={_file_digest(correction)} calibration={calibration.scale:.6g} "
           f"bn={n_bn_batches}x{bn_batch_size}")
    path = run_file(run_dir, "objectives") if cache else None
    if path is not None and _stale(path, tag):
        print(f"[search] {path} was computed from another supernet, cost model or calibration (an earlier chapter "
              f"ran again): scoring afresh", flush=True)
        path.unlink()
    objectives = Objectives(lambda arch: evaluate_arch(supernet, arch, bn, val, n_bn_batches), cost, path, tag)
    return RunSearch(space, supernet, data, cost_model, calibration, objectives, info)


def _stale(path: Path, tag: str) -> bool:
    """The objectives cache at ``path`` exists and was written under another ``tag`` (or cannot be read as one)."""
    if not path.exists():
        return False
    try:
        return read_json(path).get("tag") != tag
    except (ArtifactError, AttributeError):  # not JSON, or not an object: not a cache this run can use
        return True


def _weights_digest(model: Any) -> str:
    """A digest of the weights themselves: ``torch.save`` writes a new serialization id into every file, so the same
    supernet saved again (chapter 4 run again over its finished checkpoints) has other file bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]

