"""The argument types of the book's two command lines (``python -m ersam_lib`` and ``python -m data_prep``): bad
values are one-line argparse errors, not tracebacks."""

from __future__ import annotations

import argparse
import math

__all__ = ["fraction", "non_negative_int", "positive_float", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (epochs, workers)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (timeouts in seconds)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (thresholds on normalised uncertainties)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value
