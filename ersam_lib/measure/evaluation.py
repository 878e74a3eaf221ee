"""Scoring a counting model: exact-count accuracy, mean absolute count error, predictions (chapters 3-6).

Every model of the book maps a batch of inputs to logits ``(B, n_classes)``; the class index is the count (or the
ambiance level). These helpers never train and never move the model: they follow the model's device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from data_prep.labels import DEFAULT_THRESHOLDS, level_of

from .uncertainty import accuracy_interval, mean_interval

__all__ = ["count_report", "device_of", "eval_loader", "evaluate", "labels_of", "predict"]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def eval_loader(ds: Dataset, batch_size: int = 256) -> DataLoader:
    """Deterministic loader for scoring (no shuffle)."""
    return DataLoader(ds, batch_size=batch_size, sampler=SequentialSampler(ds))


def labels_of(ds: Dataset) -> np.ndarray:
    """The labels of ``ds`` in the order :func:`predict` scores it (chapter 4 records them beside predictions)."""
    return np.concatenate([np.asarray(b[1]) for b in eval_loader(ds)]) if len(ds) else np.zeros(0, np.int64)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable) -> dict[str, float]:
    """Exact-count accuracy and mean absolute count error of ``model`` on ``loader`` (chapters 3-5)."""
    y_true, y_pred = predict(model, loader)
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty loader")
    return {"acc": float(np.mean(y_pred == y_true)), "mae": float(np.mean(np.abs(y_pred - y_true))),
            "n": int(len(y_true))}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` over ``loader`` (chapters 3-5 draw confusion matrices from them)."""
    model.eval()
    device = device_of(model)
    ys, ps = [], []
    for batch in loader:
        ps.append(model(batch[0].to(device)).argmax(1).cpu().numpy())
        ys.append(np.asarray(batch[1]))
    if not ys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ys), np.concatenate(ps)


def count_report(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                 thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Everything chapters 5-6 report for a counting model (class index = speaker count): exact-count accuracy
    (ERSAM's metric) and MAE (CountNet's), each with its 95 % interval (``acc_low``/``acc_high``, ``mae_low``/
    ``mae_high``: :mod:`ersam_lib.measure.uncertainty`), per-count accuracy and MAE, the confusion matrix (rows true,
    columns predicted), and the same on the four ambiance levels none/low/moderate/active
    (:func:`data_prep.labels.level_of`)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equal, non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    lt, lp = level_of(y_true, thresholds), level_of(y_pred, thresholds)
    acc, mae = accuracy_interval(y_true == y_pred), mean_interval(np.abs(y_true - y_pred))
    return {"acc": acc.value, "mae": mae.value, "acc_low": acc.low, "acc_high": acc.high, "mae_low": mae.low,
            "mae_high": mae.high, "n": int(y_true.size), "per_class_acc": _per_class(y_true, y_pred, n_classes),
            "per_class_mae": _per_class_mae(y_true, y_pred, n_classes),
            "confusion": _confusion(y_true, y_pred, n_classes).tolist(),
            "level_acc": float(np.mean(lt == lp)), "level_mae": float(np.mean(np.abs(lt - lp))),
            "level_per_class_acc": _per_class(lt, lp, len(thresholds) + 1),
            "level_confusion": _confusion(lt, lp, len(thresholds) + 1).tolist()}


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def _per_class_mae(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> list[float | None]:
    """MAE on each true class (``None`` for a class with no sample): CountNet's per-count error."""
    return [float(np.mean(np.abs(y_pred[y_true == k] - k))) if np.any(y_true == k) else None for k in range(n)]


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> list[float | None]:
    """Accuracy on each true class (``None`` for a class with no sample)."""
    return [float(np.mean(y_pred[y_true == k] == k)) if np.any(y_true == k) else None for k in range(n)]
