"""Rendering a manifest row into 5 s of 16-kHz audio (chapter 1; chapters 3 and 6 call it for waveforms).

Deterministic: the same row and source give the same samples. Steps: place each speaker's trimmed stretches,
bring the speaker track to unit RMS (equal power) and apply its gain, optionally reverberate it, sum, add the
background at the row's SNR (or alone for k = 0), peak-normalise to the row's level.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from .sources.base import SpeechSource
from .vad import FRAME

SAMPLE_RATE = 16_000


def _recipe(row: Mapping[str, Any] | Any) -> dict:
    recipe = row["recipe"]
    return json.loads(recipe) if isinstance(recipe, str) else recipe


def speaker_tracks(row: Mapping[str, Any] | Any, source: SpeechSource) -> np.ndarray:
    """(speakers, samples) float32: each speaker's placed, equal-power, gained (and reverberated) track."""
    recipe = _recipe(row)
    n = int(recipe["n_samples"])
    out = np.zeros((len(recipe["tracks"]), n), np.float32)
    for i, tr in enumerate(recipe["tracks"]):
        for utt, src, length, dst in tr["segments"]:
            audio = source.load(utt)[src * FRAME:(src + length) * FRAME]
            out[i, dst * FRAME:dst * FRAME + len(audio)] += audio
        rms = np.sqrt(np.mean(out[i][out[i] != 0] ** 2)) if np.any(out[i]) else 1.0
        out[i] *= 10 ** (tr["gain_db"] / 20) / max(rms, 1e-6)
        if tr.get("rt60", 0.0) > 0:
            out[i] = reverberate(out[i], tr["rt60"], np.random.default_rng([recipe["noise"]["seed"], i]))
    return out


@functools.lru_cache(maxsize=4)
def _grids(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # log-frequency and cos(omega) of the rfft bins, and the time axis: the same for every 5-s background.
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    return (np.log(f).astype(np.float32), np.cos(2 * np.pi * f / SAMPLE_RATE).astype(np.float32),
            np.arange(n, dtype=np.float32) / SAMPLE_RATE)


def background(n: int, seed: int) -> np.ndarray:
    """Non-speech background (unit RMS): coloured noise with a random spectral slope, slow level changes, and
    sometimes mains hum or clicks. A stand-in for LibriCount's acoustic-scene recordings, which are not offline."""
    rng = np.random.default_rng(seed)
    # Colouring in the frequency domain: 1/f^alpha (alpha in [0, 2], white to brown) times a one-pole low-pass.
    spec = np.fft.rfft(rng.standard_normal(n, dtype=np.float32))
    log_f, cos_w, t = _grids(n)
    pole = rng.uniform(0.0, 0.9)
    spec *= np.exp(np.float32(-rng.uniform(0.0, 2.0) / 2) * log_f) / np.sqrt(1 - 2 * pole * cos_w + pole**2)
    x = np.fft.irfft(spec, n).astype(np.float32)
    x *= 1 + np.float32(rng.uniform(0, 0.8)) * np.sin(np.float32(2 * np.pi * rng.uniform(0.1, 2.0)) * t
                                                      + np.float32(rng.uniform(0, 6.3)))
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    if rng.random() < 0.3:  # mains hum and harmonics
        f0 = rng.choice([50.0, 60.0])
        x += sum(np.float32(rng.uniform(0.1, 0.6) / h) * np.sin(np.float32(2 * np.pi * f0 * h) * t) for h in (1, 2, 3))
    if rng.random() < 0.3:  # sparse clicks (rain, keyboard, dishes)
        idx = rng.integers(0, n, size=int(rng.integers(5, 60)))
        x[idx] += rng.uniform(2, 8, size=idx.size) * rng.choice([-1, 1], size=idx.size)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def reverberate(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise with the given RT60 (seconds)."""
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    rir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0  # direct path
    rir /= np.sqrt(np.sum(rir**2))
    return fftconvolve(x, rir)[: len(x)].astype(np.float32)


def render_mixture(row: Mapping[str, Any] | Any, source: SpeechSource) -> np.ndarray:
    """5 s of 16-kHz mono float32 audio for one manifest row (deterministic)."""
    recipe = _recipe(row)
    n = int(recipe["n_samples"])
    tracks = speaker_tracks(row, source)
    mix = tracks.sum(axis=0, dtype=np.float64)
    noise = recipe["noise"]
    if len(tracks) == 0:
        mix = background(n, noise["seed"]).astype(np.float64)
    elif noise["snr_db"] is not None:
        p_speech = np.mean(mix**2)
        mix = mix + background(n, noise["seed"]) * np.sqrt(p_speech / 10 ** (noise["snr_db"] / 10))
    peak = np.abs(mix).max()
    return (mix * (10 ** (recipe["peak_dbfs"] / 20) / max(peak, 1e-9))).astype(np.float32)
