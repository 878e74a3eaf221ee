"""Scoring a counting model: exact-count accuracy, mean absolute count error, predictions (chapters 3-6).

Every model of the book maps a batch of inputs to logits ``(B, n_classes)``; the class index is the count (or the
ambiance level). These helpers never train and never move the model: they follow the model's device.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

__all__ = ["device_of", "eval_loader", "evaluate", "predict"]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def eval_loader(ds: Dataset, batch_size: int = 256) -> DataLoader:
    """Deterministic loader for scoring (no shuffle)."""
    return DataLoader(ds, batch_size=batch_size, sampler=SequentialSampler(ds))


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
