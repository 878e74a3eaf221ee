"""Supervised training of one classifier on the labels (chapter 3; chapter 5 reuses it for baselines and finalists).

- :func:`train_classifier`: AdamW, one-cycle learning rate, gradient clipping, the weights of the best validation
  epoch kept;
- :func:`fit_teacher`: chapter 3 in one call (build the teacher, train it, score it, save it to ``RUN_DIR/teacher``);
- :func:`fit_largest_student`: the largest architecture of chapter 4's space trained alone with the teacher's data
  and schedule, the comparison that tells whether the teacher can teach;
- :func:`fit_baseline`: chapter 5's baselines trained on the same data with the same recipe (:class:`FitConfig`),
  saved in ``RUN_DIR/search/baselines/`` and reused by a re-run;
- :func:`finetune_subnet`: a searched architecture extracted from the supernet and fine-tuned briefly (chapter 5).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from data_prep.dynamic import EpochRounds, build_rounds

from ..core.io import ArtifactError, atomic_torch_save, atomic_write_json, read_json, torch_load
from ..core.progress import progress
from ..core.repro import pick_device
from ..core.rundir import run_file
from ..core.scales import sizes
from ..measure.complexity import count_params
from ..measure.data import FeatureData, WaveformDataset, load_feature_data, subset
from ..measure.evaluation import count_report, eval_loader, evaluate, predict
from ..measure.uncertainty import mcnemar
from ..models.baselines import build_baseline
from ..models.space import Arch, build_model, space_for_run
from ..models.supernet import Supernet, recalibrate_bn
from ..models.teacher import (CRNNTeacher, TeacherConfig, TeacherUnavailable, build_wav2vec2, load_teacher,
                              save_teacher, teacher_info)

__all__ = [
    "FitConfig", "FitReport", "Recipe", "finetune_subnet", "fit_baseline", "fit_largest_student", "fit_teacher",
    "split_scores", "teacher_lead", "train_classifier",
]


class Recipe(Protocol):
    """What :func:`train_classifier` reads from a config (:class:`FitConfig` and :class:`TeacherConfig` have it)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    seed: int


@dataclass(frozen=True)
class FitConfig:
    """The supervised recipe of chapter 5's baselines and finalists: AdamW, one-cycle LR, clipping, best epoch.

    ``max_train_samples`` caps the training mixtures (:func:`ersam_lib.measure.data.subset`, the same rule as the
    teacher and the supernet). ``tutorial`` gives a baseline the supernet's budget per subnet (5 epochs x 6,000
    mixtures); a finalist, which starts from the supernet's weights, gets ``finetune_epochs``.
    """

    epochs: int = 5
    finetune_epochs: int = 2
    finetune_lr: float = 1e-3
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    max_train_samples: int | None = 6000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.finetune_epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, finetune_epochs >= 0, batch_size >= 1, lr > 0; got {self}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> FitConfig:
        return cls(**(sizes("fit", scale) | overrides))

    def finetune(self) -> FitConfig:
        """The recipe of a fine-tuning run: ``finetune_epochs`` at ``finetune_lr``."""
        return dataclasses.replace(self, epochs=max(1, self.finetune_epochs), lr=self.finetune_lr)


@dataclass
class FitReport:
    """What :func:`train_classifier` measured: per-epoch history, best validation accuracy, wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = 0.0
    best_epoch: int = 0
    wall_s: float = 0.0


def train_classifier(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: Recipe,
                     device: str | None = "auto") -> FitReport:
    """Supervised training with AdamW, cosine LR, clipping; keeps the weights of the best validation epoch.

    Introduced in chapter 3 for the teacher; ``train_ds``/``val_ds`` yield ``(input, label)``. The model is moved
    to ``device`` (:func:`~ersam_lib.core.repro.pick_device`: the GPU when there is one) and stays there, in the default
    memory layout (a model with ``train_channels_last`` trains in channels-last).
    """
    dev = pick_device(device)
    model.to(dev).to(memory_format=_training_format(model))
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=RandomSampler(train_ds, generator=gen),
                        drop_last=len(train_ds) > cfg.batch_size)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader),
                                                pct_start=0.15)
    report, best, t0 = FitReport(), copy.deepcopy(model.state_dict()), time.perf_counter()
    for epoch in range(cfg.epochs):
        _set_epoch(train_ds, epoch)
        model.train()
        total, n = 0.0, 0
        for x, y in progress(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        val = evaluate(model, eval_loader(val_ds, 128))
        report.history.append({"epoch": epoch + 1, "train_loss": total / n, "val_acc": val["acc"],
                               "val_mae": val["mae"], "wall_s": time.perf_counter() - t0})
        if val["acc"] >= report.best_val_acc:
            report.best_val_acc, report.best_epoch = val["acc"], epoch + 1
            best = copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    model.to(memory_format=torch.contiguous_format)  # what export, quantization and the cost model expect
    report.wall_s = time.perf_counter() - t0
    return report


def _training_format(model: nn.Module) -> torch.memory_format:
    """Channels-last for a model that says it trains faster so (``train_channels_last``: chapter 3's CRNN teacher,
    the MobileNetV2-style baseline), the default layout otherwise."""
    return torch.channels_last if getattr(model, "train_channels_last", False) else torch.contiguous_format


def _set_epoch(ds: Dataset, epoch: int) -> None:
    """Tell a dataset that changes with the epoch (dynamic mixing, :class:`data_prep.dynamic.EpochRounds`), also
    inside a :class:`~torch.utils.data.Subset`, which epoch starts."""
    for d in (ds, getattr(ds, "dataset", None)):
        if hasattr(d, "set_epoch"):
            d.set_epoch(epoch)  # type: ignore[union-attr]


def fit_teacher(run_dir: str | os.PathLike, cfg: TeacherConfig, device: str | None = "auto") -> dict[str, Any]:
    """Chapter 3 in one call: build the teacher ``cfg`` asks for (falling back to the CRNN when the pretrained
    wav2vec2 cannot be loaded), train it (on ``cfg.mix_rounds`` extra rounds of fresh mixtures too, one per epoch in
    turn: dynamic mixing), score it on val and test, save it to ``RUN_DIR/teacher/``.

    Returns the report that ``teacher.json`` holds (kind, params, accuracies, wall time, why a fallback happened).
    A teacher already saved with the same recipe on the same data (the features' content key), whose weights are
    intact, is reused: re-running chapter 3 after a later cell failed does not train it again.
    """
    torch.manual_seed(cfg.seed)
    data = load_feature_data(run_dir)
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}
    reused = _saved_teacher(run_dir, recipe, data.key)
    if reused is not None:
        return reused
    kind, fallback = cfg.kind, None
    info: dict[str, Any] = {"n_features": data.n_features, "n_classes": data.n_classes, "data_key": data.key}
    if kind == "wav2vec2":
        try:
            model = build_wav2vec2(data.n_classes)
            train_ds: Dataset = WaveformDataset(run_dir, "train")
            val_ds, test_ds = WaveformDataset(run_dir, "val"), WaveformDataset(run_dir, "test")
        except TeacherUnavailable as e:
            kind, fallback = "crnn", str(e)
    if kind == "crnn":
        model = CRNNTeacher(data.n_features, data.n_classes, tuple(cfg.channels), cfg.hidden)
        train_ds, val_ds, test_ds = data.train, data.val, data.test
        info |= {"channels": list(cfg.channels), "hidden": cfg.hidden}
        if cfg.mix_rounds:  # dynamic mixing: fresh training sets drawn and rendered once, one per epoch in turn
            t_mix = time.perf_counter()
            rounds = build_rounds(run_dir, cfg.mix_rounds, mix_sources=cfg.mix_sources)
            train_ds = EpochRounds(run_dir, cfg.mix_rounds, cfg.mix_sources)
            info |= {"mix_rounds": cfg.mix_rounds, "mix_s": time.perf_counter() - t_mix,
                     "mix_reused": all(r["reused"] for r in rounds)}
    train_ds = subset(train_ds, cfg.max_train_samples, cfg.seed)
    fit = train_classifier(model, train_ds, val_ds, cfg, device)
    test = evaluate(model, eval_loader(test_ds, 128))
    if kind == "crnn":  # the real-speech splits, on the same features (sim-to-real gap)
        info |= split_scores(model, data.extra)
    info |= {"kind": kind, "input": "waveform" if kind == "wav2vec2" else "logmel", "fallback_reason": fallback,
             "val_acc": fit.best_val_acc, "best_epoch": fit.best_epoch, "test_acc": test["acc"],
             "test_mae": test["mae"], "train_samples": len(train_ds), "wall_s": fit.wall_s,  # type: ignore[arg-type]
             "distinct_train_samples": len(train_ds) * min(cfg.epochs, info.get("mix_rounds", 0) + 1),  # type: ignore
             "history": fit.history, "config": recipe}
    save_teacher(run_dir, model, info)
    return teacher_info(run_dir)


def _saved_teacher(run_dir: str | os.PathLike, recipe: dict[str, Any], data_key: str) -> dict[str, Any] | None:
    """``teacher.json`` when the saved teacher was trained with ``recipe`` on ``data_key`` and loads intact."""
    if not run_file(run_dir, "teacher_info").exists():
        return None
    try:
        info = teacher_info(run_dir)
        if info.get("config") != recipe or info.get("data_key") != data_key:
            return None
        load_teacher(run_dir)  # checks the weights' hash and that they load
    except (ArtifactError, FileNotFoundError, ValueError):
        return None  # damaged or stale: train again (the new one replaces it)
    return info


def fit_largest_student(run_dir: str | os.PathLike, scale: str, cfg: TeacherConfig,
                        device: str | None = "auto") -> dict[str, Any]:
    """Train the largest architecture of chapter 4's space alone on the labels, with the teacher's schedule on the
    training split (not the teacher's extra rounds of dynamic mixing: those are the teacher's advantage).

    Chapter 3 compares it with the teacher: distillation can only help if the teacher is clearly better.
    """
    data = load_feature_data(run_dir)
    space = space_for_run(run_dir, scale, data)
    torch.manual_seed(cfg.seed)
    model = build_model(space.largest(), data.n_features, data.n_classes, space.attn_dim)
    fit = train_classifier(model, subset(data.train, cfg.max_train_samples, cfg.seed), data.val, cfg, device)
    test = evaluate(model, eval_loader(data.test, 128))
    compared = {"val": data.val} | {k: v for k, v in data.extra.items() if k == "real_val"}
    return {"arch": space.largest().describe(), "params": count_params(model), "macs": space.macs(space.largest()),
            "val_acc": fit.best_val_acc, "test_acc": test["acc"], "test_mae": test["mae"], "wall_s": fit.wall_s,
            "history": fit.history,
            "predictions": {k: predict(model, eval_loader(ds))[1].tolist() for k, ds in compared.items()}
            } | split_scores(model, data.extra)


def teacher_lead(run_dir: str | os.PathLike, student: dict[str, Any]) -> pd.DataFrame:
    """The saved teacher against the largest subnet trained alone (:func:`fit_largest_student`), per validation split
    it scored (chapter 3): both accuracies, the lead in points with its 95 % interval and McNemar's exact test on the
    same windows, and the verdict (is the teacher better, or not distinguishable at this scale?)."""
    data, teacher = load_feature_data(run_dir), load_teacher(run_dir)
    waveform = teacher_info(run_dir).get("input") == "waveform"  # a wav2vec2 teacher reads the same windows' audio
    rows = []
    for split, pred in student["predictions"].items():
        ds = WaveformDataset(run_dir, split) if waveform else data.splits[split]
        y, by_teacher = predict(teacher, eval_loader(ds))
        t = mcnemar(by_teacher == y, np.asarray(pred) == y)
        rows.append({"split": split, "n": t.n, "teacher_acc": float(np.mean(by_teacher == y)),
                     "student_acc": float(np.mean(np.asarray(pred) == y)), **t.points("lead_points"), "p": t.p_value,
                     "verdict": t.verdict("teacher", "largest subnet")})
    return pd.DataFrame(rows)


def split_scores(model: nn.Module, splits: dict[str, Dataset]) -> dict[str, float]:
    """``<split>_acc`` and ``<split>_mae`` of ``model`` on each named split (chapters 3-6 score the real-speech
    splits, ``real_val``/``real_test``/``real_test_other``, beside the synthetic ones)."""
    out: dict[str, float] = {}
    for name, ds in splits.items():
        r = evaluate(model, eval_loader(ds, 256))
        out |= {f"{name}_acc": r["acc"], f"{name}_mae": r["mae"]}
    return out


# --------------------------------------------------------------------------------------------- chapter 5
def fit_baseline(name: str, data: FeatureData, cfg: FitConfig, folder: str | os.PathLike,
                 device: str | None = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Train baseline ``name`` (:data:`ersam_lib.models.baselines.BASELINES`) on chapter 1's features with ``cfg`` and
    score it on the test split (chapter 5). Weights and report go to ``folder/<name>.pt`` and ``.json``; a re-run
    with the same recipe and data (the features' content key) loads them instead of training again."""
    folder = Path(folder)
    key = {"name": name, "config": dataclasses.asdict(cfg), "data": data.key}
    report_path, weights_path = folder / f"{name}.json", folder / f"{name}.pt"
    torch.manual_seed(cfg.seed)
    model = build_baseline(name, data.n_features, data.n_classes)
    if report_path.exists() and weights_path.exists() and read_json(report_path).get("key") == key:
        try:
            model.load_state_dict(torch_load(weights_path))
            return model.eval(), read_json(report_path)
        except ArtifactError as e:  # a damaged cache is a miss: train again
            print(f"[fit] {e}; training {name} again", flush=True)
            torch.manual_seed(cfg.seed)
            model = build_baseline(name, data.n_features, data.n_classes)
    fit = train_classifier(model, subset(data.train, cfg.max_train_samples, cfg.seed), data.val, cfg, device)
    report = {"key": key, "name": name, "params": count_params(model), "val_acc": fit.best_val_acc,
              "train_s": fit.wall_s, "history": fit.history} | _test_report(model.cpu(), data)
    atomic_torch_save(model.state_dict(), weights_path)
    atomic_write_json(report_path, report)
    return model.eval(), report


def finetune_subnet(supernet: Supernet, arch: Arch, data: FeatureData, cfg: FitConfig,
                    device: str | None = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Extract ``arch`` from the trained supernet (weights inherited, BatchNorm recalibrated), fine-tune it for
    ``cfg.finetune_epochs`` on the labels, and score it on the test split (chapter 5's finalists).

    ``finetune_epochs=0`` scores the inherited weights as they are.
    """
    torch.manual_seed(cfg.seed)
    model = supernet.get_active_subnet(arch)
    train = subset(data.train, cfg.max_train_samples, cfg.seed)
    bn = torch.utils.data.DataLoader(train, batch_size=cfg.batch_size, shuffle=False)
    recalibrate_bn(model, bn, max(1, 1024 // cfg.batch_size))
    inherited = evaluate(model, eval_loader(data.val))["acc"]
    fit = train_classifier(model, train, data.val, cfg.finetune(), device) if cfg.finetune_epochs else None
    report = {"arch": arch.to_dict(), "arch_id": arch.arch_id, "params": count_params(model),
              "val_acc_inherited": inherited, "val_acc": fit.best_val_acc if fit else inherited,
              "train_s": fit.wall_s if fit else 0.0} | _test_report(model.cpu(), data)
    return model.eval(), report


def _test_report(model: nn.Module, data: FeatureData) -> dict[str, Any]:
    """The test split's full report (``test_*``: accuracy, MAE, per class, confusion, levels) and the real splits'
    accuracy and MAE."""
    y_true, y_pred = predict(model, eval_loader(data.test))
    report = {f"test_{k}": v for k, v in count_report(y_true, y_pred, data.n_classes).items()}
    return report | split_scores(model, data.extra)
