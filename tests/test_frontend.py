"""Chapter 6: the log-mel front end as a torch module equals chapter 1's features and ignores the input level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep.config import FeatureConfig
from data_prep.features import logmel
from data_prep.normalize import peak_normalize
from ersam_lib.measure.frontend import LogMelFrontEnd

from .tones import DURATION_S, SEGMENTS, SR, tone_recording

CONFIGS = {"tutorial": FeatureConfig(), "smoke": FeatureConfig(n_mels=32, hop_length=640),
           "paper": FeatureConfig(n_mels=64, hop_length=160)}


def _windows(n: int = 6, seed: int = 0) -> np.ndarray:
    """5-s windows of speech-like material: tones switching on and off, noise at several levels, one near silence."""
    rng = np.random.default_rng(seed)
    audio, _ = tone_recording(SEGMENTS, DURATION_S)
    out = [audio[i * SR:(i + 5) * SR] for i in range(0, 30, 30 // (n - 2))][:n - 2]
    out.append(rng.standard_normal(5 * SR) * 0.05)
    out.append(rng.standard_normal(5 * SR) * 1e-6)
    return np.stack(out).astype(np.float32)


def _stats(cfg: FeatureConfig, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(-6, 2, cfg.n_mels), rng.uniform(1.0, 4.0, cfg.n_mels)


@pytest.mark.parametrize("scale", CONFIGS)
def test_front_end_equals_chapter_1_features(scale):
    """Without the level normalisation, the module computes chapter 1's standardised log-mel of the same audio, within
    1e-4 + 1e-4 x |value| (float32 sums in another order; the largest differences sit in nearly empty bands)."""
    cfg = CONFIGS[scale]
    mean, std = _stats(cfg)
    windows = _windows()
    fe = LogMelFrontEnd(cfg, mean, std, normalize=False)
    with torch.no_grad():
        got = fe(torch.from_numpy(windows)).numpy()
    want = np.stack([(logmel(w, cfg) - mean[:, None]) / std[:, None] for w in windows])
    assert got.shape == want.shape == (len(windows), cfg.n_mels, fe.n_frames(5 * SR))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_front_end_normalises_the_level_like_the_meter():
    cfg = CONFIGS["tutorial"]
    mean, std = _stats(cfg)
    windows = _windows()
    with torch.no_grad():
        got = LogMelFrontEnd(cfg, mean, std)(torch.from_numpy(windows)).numpy()
    want = np.stack([(logmel(w, cfg) - mean[:, None]) / std[:, None] for w in peak_normalize(windows)])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("factor", [0.01, 0.1, 0.5, 1.0])
def test_front_end_output_and_counts_do_not_depend_on_the_input_level(factor):
    cfg = CONFIGS["smoke"]
    fe = LogMelFrontEnd(cfg, *_stats(cfg))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(cfg.n_mels * fe.n_frames(5 * SR), 6))
    x = torch.from_numpy(_windows()[:-1])  # the near-silent window sits below the floor on purpose: not gain-free
    with torch.no_grad():
        ref, scaled = fe(x), fe(x * factor)
        np.testing.assert_allclose(scaled.numpy(), ref.numpy(), atol=1e-3, rtol=0)
        assert model(scaled).argmax(1).tolist() == model(ref).argmax(1).tolist()


def test_front_end_from_a_card_and_bad_statistics():
    cfg = CONFIGS["smoke"]
    mean, std = _stats(cfg)
    spec = {"kind": "logmel", "feature_config": cfg.__dict__, "mean": mean.tolist(), "std": std.tolist()}
    fe = LogMelFrontEnd.from_card(spec)
    assert fe.cfg == cfg and torch.allclose(fe.mean[:, 0], torch.tensor(mean, dtype=torch.float32))
    with pytest.raises(ValueError, match="log-mel"):
        LogMelFrontEnd.from_card(spec | {"kind": "stft"})
    with pytest.raises(ValueError, match="one per mel band"):
        LogMelFrontEnd(cfg, mean[:3], std)
