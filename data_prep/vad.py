"""Voice activity per 10-ms frame with WebRTC's VAD, and the helpers the mixing recipe builds on (chapter 1).

LibriCount labels a mixture with the maximum number of speakers active at one instant, computed from per-speaker
VAD tracks; chapter 6 reuses the same frame grid (10 ms) for RTTM turns.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
FRAME = 160  # 10 ms at 16 kHz: the frame grid of every activity track in the book


def vad_frames(audio: np.ndarray, mode: int = 2, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Boolean speech activity per 10-ms frame of mono float audio in [-1, 1] (``mode`` 0-3: aggressiveness).

    A trailing partial frame is dropped, so the track has ``len(audio) // 160`` frames.
    """
    import webrtcvad

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"vad_frames expects {SAMPLE_RATE} Hz audio, got {sample_rate}")
    vad = webrtcvad.Vad(int(mode))
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    n = len(audio) // FRAME
    step = FRAME * 2
    return np.fromiter((vad.is_speech(pcm[i * step:(i + 1) * step], SAMPLE_RATE) for i in range(n)),
                       dtype=bool, count=n)


def trim_bounds(active: np.ndarray) -> tuple[int, int] | None:
    """First and one-past-last active frame (leading/trailing silence trimmed), or ``None`` if nothing is active."""
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return None
    return int(idx[0]), int(idx[-1]) + 1


def to_runs(active: np.ndarray) -> list[list[int]]:
    """Run-length code a boolean track as ``[[start, end), ...]`` frame intervals (compact for the manifest)."""
    padded = np.concatenate([[False], np.asarray(active, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def from_runs(runs: list[list[int]], n_frames: int) -> np.ndarray:
    """Inverse of :func:`to_runs`."""
    out = np.zeros(n_frames, bool)
    for a, b in runs:
        out[max(a, 0):min(b, n_frames)] = True
    return out
