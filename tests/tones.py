"""Small generated audio with known speaker counts for the chapter-6 tests (meter, party, RTTM evaluation).

- :func:`tone_recording`: "speakers" are pure tones at multiples of 100 Hz switched on and off on the 10-ms grid,
  so the count in every 10-ms frame is known exactly, with its RTTM turns.
- :class:`ToneCounter`: a real torch module (waveform -> logits) that counts those tones per 10-ms frame with an
  FFT and an *absolute* amplitude threshold, and returns the window's maximum: exact on :func:`tone_recording`,
  and sensitive to the input level, which is what the level normalisation must undo.
- :func:`write_tone_speakers`: a speaker-labelled folder (``FolderSource``) of harmonic, syllable-modulated tones,
  which WebRTC's VAD hears as speech: a fast stand-in speech source for the party generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch import nn

SR = 16_000
FREQS = (500, 800, 1100, 1400, 1700)  # whole cycles in a 10-ms frame: one FFT bin each, no leakage


class ToneCounter(nn.Module):
    """Counts the :data:`FREQS` tones above ``threshold`` amplitude per 10-ms frame; logits = 10 x one-hot(max)."""

    def __init__(self, max_count: int = 5, threshold: float = 0.02) -> None:
        super().__init__()
        self.register_buffer("bins", torch.tensor([f // 100 for f in FREQS]))
        self.max_count, self.threshold = max_count, threshold

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unflatten(1, (-1, SR // 100))
        amp = torch.fft.rfft(frames, dim=-1).abs()[..., self.bins] * (2 / frames.shape[-1])
        k = (amp > self.threshold).sum(-1).amax(1).clamp(max=self.max_count)
        return 10.0 * nn.functional.one_hot(k, self.max_count + 1).float()


def tone_recording(segments: dict[int, list[tuple[float, float]]], duration_s: float,
                   amplitude: float = 0.2, file_id: str = "tones") -> tuple[np.ndarray, pd.DataFrame]:
    """16-kHz audio with tone ``i`` on during ``segments[i]`` (seconds, on the 10-ms grid) and its RTTM turns."""
    t = np.arange(int(round(duration_s * SR))) / SR
    audio = np.zeros_like(t)
    rows = []
    for i, spans in segments.items():
        for a, b in spans:
            on = (t >= a - 1e-9) & (t < b - 1e-9)
            audio[on] += amplitude * np.sin(2 * np.pi * FREQS[i] * t[on])
            rows.append((file_id, "1", a, b - a, f"spk{i}"))
    return audio.astype(np.float32), pd.DataFrame(rows, columns=["file_id", "channel", "onset", "duration", "speaker"])


# The recording most tests use: 36 s; with 5-s windows every 5 s the counts are COUNTS, and the tail window
# [31, 36) holds 1 (tone 0 comes back at 35.2 s). Changes of the count keep >= 50 ms from window edges, so that
# a lossy codec's pre-echo (Ogg Vorbis) cannot move a tone into the neighbouring window.
SEGMENTS = {0: [(0.5, 12.0), (20.1, 29.0), (35.2, 36.0)], 1: [(6.0, 9.0), (14.0, 16.0), (19.0, 26.0)],
            2: [(7.0, 8.0), (22.0, 24.0)], 3: [(23.0, 23.5)]}
DURATION_S = 36.0
COUNTS = [1, 3, 1, 1, 4, 2, 0]
TAIL_COUNT = 1


def write_tone_speakers(root: Path, n_speakers: int = 6, per_speaker: int = 3, seed: int = 0) -> Path:
    """``root/s<i>/u<j>.wav``: harmonic tones (f0 110 + 30 i Hz), 4-Hz syllable modulation, 0.2 s of silence around."""
    rng = np.random.default_rng(seed)
    for s in range(n_speakers):
        f0 = 110 + 30 * s
        for u in range(per_speaker):
            t = np.arange(int(rng.uniform(1.0, 2.5) * SR)) / SR
            x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
            x *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 5) * t)
            x = np.concatenate([np.zeros(SR // 5), 0.3 * x / np.abs(x).max(), np.zeros(SR // 5)])
            path = root / f"s{s}" / f"u{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.astype(np.float32), SR)
    return root
