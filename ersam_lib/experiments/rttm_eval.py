"""Scoring the streaming meter on annotated conversations: RTTM speaker turns -> per-window truths (chapter 6).

For every recording in a folder with a same-stem ``.rttm`` beside it (or in ``rttm_dir``), the meter's windows
(:func:`ersam_lib.experiments.meter.count`, the grid without the aligned tail window) are compared with the truths of
:func:`data_prep.rttm.window_counts` on the same grid: the maximum number of speakers active at one instant in the
window. Reported: exact-count accuracy, mean absolute error, accuracy per true count k and the confusion matrix;
the same for the four ambiance levels (their MAE is in levels).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from data_prep.rttm import FRAME_S, RttmError, read_rttm, window_counts

from ..core.progress import progress
from .meter import LEVEL_NAMES, MeterConfig, MeterError, WindowCounter, class_kind, count, level_index

__all__ = ["RttmReport", "annotated_pairs", "confusion", "evaluate_rttm", "score", "truths"]

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg")


def score(true: np.ndarray | list[int], pred: np.ndarray | list[int], labels: list[int]) -> dict[str, Any]:
    """Accuracy, MAE and per-class accuracy of integer predictions (classes in ``labels``, ordinal)."""
    true, pred = np.asarray(true, int), np.asarray(pred, int)
    if true.shape != pred.shape or true.ndim != 1 or len(true) == 0:
        raise ValueError(f"need two equal, non-empty 1-D label arrays, got {true.shape} and {pred.shape}")
    per = {int(k): {"n": int((true == k).sum()), "accuracy": float((pred[true == k] == k).mean())}
           for k in labels if (true == k).any()}
    return {"n": len(true), "accuracy": float((true == pred).mean()), "mae": float(np.abs(true - pred).mean()),
            "per_class": per}


def confusion(true: np.ndarray | list[int], pred: np.ndarray | list[int], labels: list[int],
              names: list[str] | None = None) -> pd.DataFrame:
    """Confusion matrix as a table: rows = true class, columns = predicted class, cells = window counts."""
    names = names or [str(k) for k in labels]
    m = confusion_matrix(np.asarray(true, int), np.asarray(pred, int), labels=labels)
    return pd.DataFrame(m, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


@dataclass
class RttmReport:
    """What :func:`evaluate_rttm` measured. ``windows``: one row per window (file, times, true/predicted count
    and level); ``counts``/``levels``: :func:`score` dicts (``counts`` is ``None`` for a levels model)."""

    windows: pd.DataFrame
    counts: dict[str, Any] | None
    count_confusion: pd.DataFrame | None
    levels: dict[str, Any]
    level_confusion: pd.DataFrame
    files: list[dict[str, Any]] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (confusion matrices as nested lists with their labels)."""
        def cm(t: pd.DataFrame | None) -> dict | None:
            return None if t is None else {"labels": list(t.index), "matrix": t.to_numpy().tolist()}
        return {"counts": self.counts, "count_confusion": cm(self.count_confusion), "levels": self.levels,
                "level_confusion": cm(self.level_confusion), "files": self.files, "unannotated": self.unannotated}

    def summary(self) -> str:
        """A few lines for the terminal: the figures and both confusion matrices."""
        lines = [f"{len(self.files)} annotated recordings, {len(self.windows)} windows"]
        if self.counts is not None:
            per = ", ".join(f"k={k}: {v['accuracy']:.2f} (n={v['n']})" for k, v in self.counts["per_class"].items())
            lines += [f"counts: accuracy {self.counts['accuracy']:.3f}, MAE {self.counts['mae']:.3f}",
                      f"  per k: {per}", "confusion (rows true, columns predicted):", self.count_confusion.to_string()]
        per = ", ".join(f"{LEVEL_NAMES[k]}: {v['accuracy']:.2f} (n={v['n']})"
                        for k, v in self.levels["per_class"].items())
        lines += [f"levels: accuracy {self.levels['accuracy']:.3f}, MAE {self.levels['mae']:.3f} levels",
                  f"  per level: {per}", "confusion (rows true, columns predicted):", self.level_confusion.to_string()]
        if self.unannotated:
            lines.append(f"skipped (no .rttm): {', '.join(self.unannotated)}")
        lines += [f"warning: {w}" for f in self.files for w in f.get("warnings", [])]
        return "\n".join(lines)


def annotated_pairs(audio_dir: str | os.PathLike, rttm_dir: str | os.PathLike | None = None
                    ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(audio, rttm) pairs of a folder, matched by file stem, and the audio files without an RTTM."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise MeterError(f"audio folder {audio_dir} does not exist or is not a directory")
    rttm_dir = Path(rttm_dir) if rttm_dir is not None else audio_dir
    if not rttm_dir.is_dir():
        raise MeterError(f"RTTM folder {rttm_dir} does not exist or is not a directory")
    audio = sorted(p for p in audio_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    pairs = [(a, rttm_dir / f"{a.stem}.rttm") for a in audio if (rttm_dir / f"{a.stem}.rttm").is_file()]
    missing = [a.name for a in audio if not (rttm_dir / f"{a.stem}.rttm").is_file()]
    if not pairs:
        raise MeterError(f"no recording in {audio_dir} has a same-stem .rttm file in {rttm_dir} "
                         f"({len(audio)} audio files found: {'/'.join(AUDIO_SUFFIXES)})")
    return pairs, missing


def _turns_of(rttm: Path, stem: str) -> pd.DataFrame:
    try:
        turns = read_rttm(rttm)
    except RttmError as e:
        raise MeterError(str(e)) from e
    ids = sorted(turns["file_id"].unique())
    if ids and stem not in ids:  # the file's name matched, its contents annotate another recording
        raise MeterError(f"{rttm} annotates {', '.join(map(repr, ids[:5]))}, not {stem!r}: an RTTM names its "
                         f"recording in its second field; fix the file id or the file name")
    return turns[turns["file_id"] == stem]


def truths(turns: pd.DataFrame, n_windows: int, window_s: float, hop_s: float, duration_s: float) -> np.ndarray:
    """True counts of the first ``n_windows`` grid windows (:func:`data_prep.rttm.window_counts`; no turns: 0)."""
    if turns.empty:
        return np.zeros(n_windows, int)
    t = window_counts(turns, window_s, hop_s, duration_s)["count"].to_numpy(int)
    if len(t) != n_windows:
        raise RuntimeError(f"window grids disagree: {len(t)} annotated windows, {n_windows} metered")
    return t


def evaluate_rttm(audio_dir: str | os.PathLike, counter: WindowCounter, cfg: MeterConfig | None = None, *,
                  rttm_dir: str | os.PathLike | None = None, **overrides: Any) -> RttmReport:
    """Score ``counter`` through the meter on every annotated recording of ``audio_dir`` (chapter 6).

    ``cfg``/``overrides`` as for :func:`ersam_lib.experiments.meter.count`; the tail window is always dropped (truths
    exist on the grid only) and the hop must be a whole number of 10-ms RTTM frames.
    """
    cfg = dataclasses.replace(cfg or MeterConfig(), **{**overrides, "tail": "drop"})
    if abs(cfg.hop_s / FRAME_S - round(cfg.hop_s / FRAME_S)) > 1e-6:
        raise MeterError(f"hop {cfg.hop_s:g} s must be a multiple of the 10-ms RTTM frame")
    kind = class_kind(counter.classes)
    pairs, missing = annotated_pairs(audio_dir, rttm_dir)
    tables, files = [], []
    for audio, rttm in progress(pairs, desc="evaluating on RTTM"):
        turns = _turns_of(rttm, audio.stem)
        df = count(audio, counter, cfg)
        # The RTTM grid has whole 10-ms frames; a trailing partial frame of audio holds no window start.
        duration_s = (df.attrs["audio_samples"] // round(FRAME_S * df.attrs["sample_rate"])) * FRAME_S
        true = truths(turns, len(df), df.attrs["window_s"], cfg.hop_s, duration_s)
        table = pd.DataFrame({"file": audio.name, "start_s": df["start_s"], "end_s": df["end_s"],
                              "true_count": true, "pred_count": df["count"],
                              "true_level": level_index(true, cfg.thresholds)})
        table["pred_level"] = (level_index(df["count"].to_numpy(int), cfg.thresholds) if kind == "counts"
                               else [LEVEL_NAMES.index(v) for v in df["level"]])
        tables.append(table)
        files.append({"file": audio.name, "audio_s": df.attrs["audio_s"], "windows": len(df),
                      "warnings": df.attrs["warnings"],
                      "speakers": int(turns["speaker"].nunique()), "speed_x": df.attrs["speed_x"],
                      "accuracy": float((table["true_count"] == table["pred_count"]).mean()) if kind == "counts"
                      else None})
    windows = pd.concat(tables, ignore_index=True)
    lv = list(range(len(LEVEL_NAMES)))
    levels = score(windows["true_level"], windows["pred_level"], lv)
    level_cm = confusion(windows["true_level"], windows["pred_level"], lv, list(LEVEL_NAMES))
    counts = count_cm = None
    if kind == "counts":
        true, pred = windows["true_count"].to_numpy(int), windows["pred_count"].to_numpy(int)
        ks = list(range(max(len(counter.classes) - 1, true.max(), pred.max()) + 1))
        counts, count_cm = score(true, pred, ks), confusion(true, pred, ks)
    return RttmReport(windows, counts, count_cm, levels, level_cm, files, missing)
