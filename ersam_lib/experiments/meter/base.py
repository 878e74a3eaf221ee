"""What every part of the meter shares (chapter 6): its error, the rate and window it expects, the model
protocol and the class sets it reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from data_prep.labels import LEVELS

__all__ = ["LEVEL_NAMES", "MeterError", "SAMPLE_RATE", "WINDOW_S", "WindowCounter", "class_kind", "first_line"]

SAMPLE_RATE = 16_000
WINDOW_S = 5.0
LEVEL_NAMES: tuple[str, ...] = tuple(name for name, _, _ in LEVELS)


class MeterError(ValueError):
    """Bad input to the meter (audio, model, options); the message is one line and names the file."""


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


@runtime_checkable
class WindowCounter(Protocol):
    """What the meter needs from a model: class names (``"0".."K"`` or the four level names), the rate and window
    length it expects, and ``predict_proba(windows (N, samples) float32) -> (N, len(classes))``. A counter with a
    true ``normalizes`` attribute brings each window to the training level itself (chapter 6's programs)."""

    classes: list[str]
    sample_rate: int
    window_s: float

    def predict_proba(self, windows: np.ndarray) -> np.ndarray: ...


def class_kind(classes: Sequence[str]) -> str:
    """``"counts"`` for classes ``"0".."K"``, ``"levels"`` for the four level names; anything else is an error."""
    classes = [str(c) for c in classes]
    if len(classes) >= 2 and classes == [str(k) for k in range(len(classes))]:
        return "counts"
    if classes == list(LEVEL_NAMES):
        return "levels"
    raise MeterError(f"model classes must be '0'..'K' or {list(LEVEL_NAMES)}, got {classes}")

