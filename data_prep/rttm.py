"""RTTM speaker turns -> 5-s windows labelled with the maximum number of concurrent speakers (chapters 1 and 6).

Real conversations annotated in RTTM (``SPEAKER <file> <chan> <onset> <dur> <NA> <NA> <speaker> <NA> <NA>``) get
the same label as the synthetic mixtures: on a 10-ms grid, k = max over frames of the number of speakers whose
turns cover the frame. Chapter 6 scores the streaming meter on these windows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .labels import max_concurrent

FRAME_S = 0.01
COLUMNS = ["file_id", "channel", "onset", "duration", "speaker"]


MAX_END_S = 365 * 24 * 3600.0  # no recording is longer than a year: a turn past it is a unit or typing mistake


class RttmError(ValueError):
    """A malformed RTTM line (the message names the file and line)."""


def parse_rttm(text: str, name: str = "<rttm>") -> pd.DataFrame:
    """Speaker turns from RTTM text: columns ``file_id, channel, onset, duration, speaker`` (seconds)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")) or parts[0] != "SPEAKER":
            continue  # comments and non-speaker records (SPKR-INFO, LEXEME, ...) carry no turns
        if len(parts) < 8:
            raise RttmError(f"{name}:{n}: a SPEAKER line needs at least 8 fields, got {len(parts)}: {line!r}")
        try:
            onset, dur = float(parts[3]), float(parts[4])
        except ValueError as e:
            raise RttmError(f"{name}:{n}: onset/duration must be numbers: {line!r}") from e
        if not (math.isfinite(onset) and math.isfinite(dur)) or onset < 0 or dur < 0:
            raise RttmError(f"{name}:{n}: onset and duration must be finite and non-negative: {line!r}")
        if onset + dur > MAX_END_S:
            raise RttmError(f"{name}:{n}: the turn ends at {onset + dur:.4g} s, past {MAX_END_S:.0f} s (a year); "
                            f"onset and duration are in seconds: {line!r}")
        rows.append((parts[1], parts[2], onset, dur, parts[7]))
    return pd.DataFrame(rows, columns=COLUMNS)


def read_rttm(path: str | os.PathLike) -> pd.DataFrame:
    """:func:`parse_rttm` of a file, with a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RTTM file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RttmError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    return parse_rttm(text, str(path))


def turns_to_activity(turns: pd.DataFrame, duration_s: float | None = None) -> tuple[list[str], np.ndarray]:
    """Per-speaker activity (speakers, frames) on the 10-ms grid for the turns of one recording."""
    end = duration_s if duration_s is not None else float((turns["onset"] + turns["duration"]).max() if len(turns) else 0)
    n = int(np.ceil(round(end / FRAME_S, 6)))
    speakers = sorted(turns["speaker"].unique()) if len(turns) else []
    act = np.zeros((len(speakers), n), bool)
    for i, spk in enumerate(speakers):
        for onset, dur in turns.loc[turns["speaker"] == spk, ["onset", "duration"]].itertuples(index=False):
            a, b = int(round(onset / FRAME_S)), int(round((onset + dur) / FRAME_S))
            act[i, a:min(b, n)] = True
    return speakers, act


def window_counts(turns: pd.DataFrame, window_s: float = 5.0, hop_s: float | None = None,
                  duration_s: float | None = None) -> pd.DataFrame:
    """Windows of ``window_s`` (every ``hop_s``, default non-overlapping) per recording, labelled with
    ``count`` (max concurrent speakers) and ``n_speakers`` (distinct speakers that talk in the window)."""
    hop_s = window_s if hop_s is None else hop_s
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        frames = value / FRAME_S
        if not math.isfinite(frames) or frames < 1 or abs(frames - round(frames)) > 1e-6:
            raise ValueError(f"{name} must be a positive multiple of {FRAME_S} s (the frame), got {value}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    out = []
    for file_id, g in turns.groupby("file_id", sort=True):
        _, act = turns_to_activity(g, duration_s)
        win, hop = int(round(window_s / FRAME_S)), int(round(hop_s / FRAME_S))
        for start in range(0, max(act.shape[1] - win, 0) + 1, hop):
            w = act[:, start:start + win]
            out.append((file_id, start * FRAME_S, (start + win) * FRAME_S, max_concurrent(w), int(w.any(axis=1).sum())))
    return pd.DataFrame(out, columns=["file_id", "start_s", "end_s", "count", "n_speakers"])


def format_rttm(turns: pd.DataFrame) -> str:
    """RTTM text of speaker turns (columns as :func:`parse_rttm` returns), one ``SPEAKER`` line per turn, sorted by
    onset; times with 3 decimals, so turns on the 10-ms grid read back exactly."""
    lines = [f"SPEAKER {f} {c} {o:.3f} {d:.3f} <NA> <NA> {s} <NA> <NA>"
             for f, c, o, d, s in turns.sort_values(["file_id", "onset", "speaker"])[COLUMNS].itertuples(index=False)]
    return "\n".join(lines) + ("\n" if lines else "")
