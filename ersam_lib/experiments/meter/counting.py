"""The meter itself (chapter 6): windows over a decoded recording, counts and ambiance levels per window."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from data_prep.labels import DEFAULT_THRESHOLDS, level_of
from data_prep.normalize import peak_normalize

from .audio import audio_blocks
from .base import LEVEL_NAMES, WINDOW_S, MeterError, WindowCounter, class_kind

__all__ = [
    "MeterConfig", "TAILS", "check_thresholds", "count", "iter_windows", "level_index", "levels_of", "summary_line",
]


TAILS: tuple[str, ...] = ("align", "drop")


@dataclass(frozen=True)
class MeterConfig:
    """How the meter slides over a recording (chapter 6).

    ``hop_s``: seconds between window starts (> 0; below the window length the windows overlap). ``tail``: what
    happens to the end of the recording that the grid leaves over (``align`` or ``drop``, see the module
    docstring). ``thresholds``: lowest count of low, moderate and active. ``normalize``: per-window peak
    normalisation to the training level. ``block_s``: seconds decoded at a time (memory stays bounded).
    """

    hop_s: float = WINDOW_S
    tail: str = "align"
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    normalize: bool = True
    block_s: float = 60.0

    def __post_init__(self) -> None:
        if not (isinstance(self.hop_s, (int, float)) and math.isfinite(self.hop_s) and self.hop_s > 0):
            raise MeterError(f"hop must be a positive number of seconds, got {self.hop_s!r}")
        if self.tail not in TAILS:
            raise MeterError(f"tail must be one of {TAILS}, got {self.tail!r}")
        check_thresholds(self.thresholds)
        if not self.block_s > 0:
            raise MeterError(f"block_s must be > 0, got {self.block_s!r}")


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, ...]:
    """Three strictly increasing counts >= 1 (the lowest count of low, moderate, active)."""
    t = tuple(thresholds)
    if len(t) != 3 or not all(isinstance(v, (int, np.integer)) for v in t) or t[0] < 1 or not t[0] < t[1] < t[2]:
        raise MeterError(f"thresholds must be three increasing whole counts >= 1 (low, moderate, active), got {t}")
    return tuple(int(v) for v in t)


def level_index(counts: np.ndarray | Sequence[int], thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Level of each count: 0 none, 1 low, 2 moderate, 3 active (thresholds checked first)."""
    return level_of(counts, check_thresholds(thresholds))


def levels_of(counts: np.ndarray | Sequence[int], thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Level names of counts (``"none"``, ``"low"``, ``"moderate"``, ``"active"``)."""
    return np.asarray(LEVEL_NAMES, dtype=object)[level_index(counts, thresholds)]


def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int, tail: str = "align",
                 batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(start samples (n,), windows (n, window))`` in batches of at most ``batch``, from a stream of blocks.

    Keeps at most one block plus one window in memory. ``tail="align"`` ends with a window that ends at the last
    sample when the grid leaves samples over. Yields nothing when the stream is shorter than one window.
    """
    if window < 1 or hop < 1 or batch < 1:
        raise MeterError(f"window, hop and batch must be >= 1 sample, got {window}, {hop}, {batch}")
    if tail not in TAILS:
        raise MeterError(f"tail must be one of {TAILS}, got {tail!r}")
    buf, lo, nxt, total, last_end = np.zeros(0, np.float32), 0, 0, 0, 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        while nxt + window <= total:
            starts = nxt + hop * np.arange(min(batch, (total - nxt - window) // hop + 1))
            yield starts, np.lib.stride_tricks.sliding_window_view(buf, window)[starts - lo]
            last_end, nxt = int(starts[-1]) + window, int(starts[-1]) + hop
        keep = max(lo, min(nxt, total - window))  # future windows start at nxt; the tail needs the last window
        buf, lo = buf[keep - lo:], keep
    if tail == "align" and total >= window and last_end < total:
        yield np.array([total - window]), buf[total - window - lo:][None]


def count(audio: str | os.PathLike | BinaryIO | np.ndarray, counter: WindowCounter, cfg: MeterConfig | None = None,
          *, input_rate: int | None = None, **overrides: Any) -> pd.DataFrame:
    """Per-window counts and ambiance levels of a recording (chapter 6's streaming meter).

    Columns: ``start_s, end_s, count`` (the most probable count; empty for a levels model), ``level`` and
    ``p_<class>`` for each class. ``df.attrs``: ``audio_s``, ``decode_s`` (reading + resampling), ``model_s``
    (normalisation + model), ``total_s``, ``rtf`` (total_s / audio_s) and ``speed_x`` (its inverse), and the
    settings. ``overrides`` replace fields of ``cfg`` (e.g. ``hop_s=2.5``).
    """
    cfg = dataclasses.replace(cfg or MeterConfig(), **overrides)
    kind = class_kind(counter.classes)
    if not cfg.normalize and getattr(counter, "normalizes", False):
        raise MeterError("this model brings each window to the training level inside the program (its card says "
                         "normalizes: true); normalize=False (--no-normalize) cannot turn that off")
    rate = int(counter.sample_rate)
    window, hop = int(round(counter.window_s * rate)), int(round(cfg.hop_s * rate))
    if hop < 1:
        raise MeterError(f"hop {cfg.hop_s!r} s is shorter than one sample at {rate} Hz")
    starts, probs = [], []
    t0 = time.perf_counter()
    with audio_blocks(audio, rate, cfg.block_s, input_rate) as (blocks, info):
        for s, w in iter_windows(blocks, window, hop, cfg.tail):
            p = np.asarray(counter.predict_proba(peak_normalize(w) if cfg.normalize else w), np.float64)
            if p.shape != (len(s), len(counter.classes)) or not np.isfinite(p).all():
                raise MeterError(f"the model returned {p.shape} (finite: {np.isfinite(p).all()}) for {len(s)} "
                                 f"windows; expected ({len(s)}, {len(counter.classes)}) probabilities")
            starts.append(s)
            probs.append(p)
    total_s = time.perf_counter() - t0
    if not starts:
        raise MeterError(f"{info.name} is {info.n_samples / rate:.2f} s long, shorter than one "
                         f"{counter.window_s:g}-s window")
    starts_a, probs_a = np.concatenate(starts), np.concatenate(probs)
    best = probs_a.argmax(axis=1)
    df = pd.DataFrame({"start_s": starts_a / rate, "end_s": (starts_a + window) / rate})
    if kind == "counts":
        df["count"] = best.astype(np.int64)
        df["level"] = levels_of(best, cfg.thresholds)
    else:
        df["count"] = pd.array([pd.NA] * len(best), dtype="Int64")
        df["level"] = np.asarray(LEVEL_NAMES, dtype=object)[best]
    for c, column in zip(counter.classes, probs_a.T):
        df[f"p_{c}"] = column
    audio_s = info.n_samples / rate
    df.attrs = {"source": info.name, "audio_s": audio_s, "audio_samples": info.n_samples,
                "input_sample_rate": info.input_rate, "input_channels": info.channels, "sample_rate": rate,
                "window_s": float(counter.window_s), "hop_s": float(cfg.hop_s), "tail": cfg.tail,
                "thresholds": list(cfg.thresholds), "normalize": cfg.normalize, "classes": list(counter.classes),
                "decode_s": info.decode_s, "model_s": total_s - info.decode_s, "total_s": total_s,
                "warnings": list(info.warnings),
                "rtf": total_s / audio_s, "speed_x": audio_s / total_s if total_s > 0 else float("inf")}
    return df


def summary_line(df: pd.DataFrame) -> str:
    """One line on what :func:`count` did: windows, audio length, time, real-time factor, level shares."""
    a = df.attrs
    shares = df["level"].value_counts(normalize=True)
    levels = ", ".join(f"{name} {shares.get(name, 0.0):.0%}" for name in LEVEL_NAMES)
    return (f"{len(df)} windows of {a['window_s']:g} s (hop {a['hop_s']:g} s) over {a['audio_s']:.1f} s of "
            f"{a['source']} in {a['total_s']:.3f} s: {a['speed_x']:.0f}x real time (RTF {a['rtf']:.2g}); {levels}")

