"""Chapter 1's log-mel front end as a torch module, so that the deployed program takes raw audio (chapter 6).

:class:`LogMelFrontEnd` maps 16-kHz waveforms ``(B, samples)`` to the standardised log-mel features ``(B, F, T)``
that the models of chapters 2-5 were trained on, in operators every runtime of :mod:`ersam_lib.measure.export` lowers:

1. the per-window level normalisation of :func:`data_prep.normalize.peak_normalize` (the peak to the middle of the
   training range, a floor for silence), so the counts do not depend on the input gain;
2. the STFT of :func:`data_prep.features.stft_magnitude` with fixed weights: centred reflect padding, then the
   frames times the Hann-windowed cosines and sines of the DFT, written as a sum of matrix products over blocks of
   ``hop_length`` samples (frame t spans blocks t, t + 1, ...), which every runtime runs as fully-connected layers;
3. the power, the mel matrix of :func:`data_prep.features.mel_filterbank`, ``log(. + LOG_EPS)``;
4. the train split's per-band standardisation (``mean``, ``std`` of ``RUN_DIR/data/features/logmel/meta.json``).

The window is zero outside its ``win_length`` central samples, so the products span only those (exact, and 22 %
cheaper at n_fft 512, win_length 400). :func:`LogMelFrontEnd.from_run` builds it from
a run's feature cache; :func:`LogMelFrontEnd.from_card` from the ``input`` entry of a model card of chapter 5.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from data_prep.config import FeatureConfig
from data_prep.features import LOG_EPS, feature_meta, hann, mel_filterbank
from data_prep.normalize import SILENCE_FLOOR_DBFS, TARGET_PEAK_DBFS

__all__ = ["LogMelFrontEnd"]


class LogMelFrontEnd(nn.Module):
    """Raw audio ``(B, samples)`` -> standardised log-mel ``(B, n_mels, frames)`` (chapter 6).

    ``normalize=False`` leaves out the level normalisation (then the output equals chapter 1's features of the same
    waveform); ``mean``/``std`` are the per-band training statistics (``None``: no standardisation).
    """

    def __init__(self, cfg: FeatureConfig | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, normalize: bool = True, peak_dbfs: float = TARGET_PEAK_DBFS,
                 floor_dbfs: float = SILENCE_FLOOR_DBFS, sample_rate: int = 16_000) -> None:
        super().__init__()
        cfg = cfg or FeatureConfig()
        self.cfg, self.normalize, self.sample_rate = cfg, bool(normalize), int(sample_rate)
        self.n_fft, self.hop = int(cfg.n_fft), int(cfg.hop_length)
        self.peak, self.floor = float(10 ** (peak_dbfs / 20)), float(10 ** (floor_dbfs / 20))
        win = int(cfg.win_length or cfg.n_fft)
        self.left = (self.n_fft - win) // 2  # the window's non-zero part inside each n_fft frame
        self.win = win
        n = np.arange(self.left, self.left + win)
        window = hann(win)
        k = np.arange(self.n_fft // 2 + 1)
        phase = 2 * np.pi * np.outer(n, k) / self.n_fft
        dft = np.concatenate([window[:, None] * np.cos(phase), -window[:, None] * np.sin(phase)], axis=1)
        # The DFT as ceil(win / hop) slices of one (win, 2 * bins) matrix: frame t = hop-blocks t, t+1, ... of the
        # padded signal, so the STFT is a sum of matrix products with fixed weights (XNNPACK's fully-connected op).
        self.n_parts = -(-win // self.hop)
        for j in range(self.n_parts):
            part = torch.tensor(dft[j * self.hop:min((j + 1) * self.hop, win)], dtype=torch.float32)
            self.register_buffer(f"dft_{j}", part)
        mel = mel_filterbank(self.n_fft, cfg.n_mels, sample_rate)
        self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel)))  # (bins, n_mels)
        n_mels = int(cfg.n_mels)
        m = torch.zeros(n_mels) if mean is None else torch.tensor(np.asarray(mean, np.float32))
        s = torch.ones(n_mels) if std is None else torch.tensor(np.asarray(std, np.float32))
        if m.shape != (n_mels,) or s.shape != (n_mels,):
            raise ValueError(f"mean and std must have {n_mels} entries (one per mel band), got {m.shape}, {s.shape}")
        self.register_buffer("mean", m[:, None])
        self.register_buffer("inv_std", (1.0 / s)[:, None])

    def n_frames(self, n_samples: int) -> int:
        """Frames of a window of ``n_samples`` (:meth:`data_prep.config.FeatureConfig.n_frames`)."""
        return self.cfg.n_frames(n_samples)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.float()
        if self.normalize:
            x = x * (self.peak / x.abs().amax(dim=-1, keepdim=True).clamp_min(self.floor))
        pad = self.n_fft // 2
        n_frames = self.n_frames(x.shape[-1])
        # Centred reflect padding (torch.stft's), cut at the window's support: mirrored edges joined to the signal,
        # which ExecuTorch runs 15x faster than its portable reflection_pad1d kernel.
        head = pad - self.left
        parts = [x[:, 1:head + 1].flip(-1)] if head > 0 else []
        x = torch.cat([*parts, x, x[:, -pad - 1:-1].flip(-1)], dim=-1)
        # Frame t covers samples [t * hop, t * hop + win) of x (the window's support): hop-blocks t, t + 1, ...
        n_blocks = n_frames + self.n_parts - 1
        x = nn.functional.pad(x, (0, max(0, n_blocks * self.hop - x.shape[-1])))[:, :n_blocks * self.hop]
        blocks = x.reshape(x.shape[0], n_blocks, self.hop)
        spec = sum(blocks[:, j:j + n_frames, :part.shape[0]] @ part
                   for j, part in enumerate(self._parts()))  # (B, frames, 2 * bins): real, then imaginary parts
        bins = self.mel.shape[0]
        power = spec[..., :bins] ** 2 + spec[..., bins:] ** 2
        logmel = torch.log(power @ self.mel + LOG_EPS)  # (B, frames, n_mels)
        return (logmel.transpose(1, 2) - self.mean) * self.inv_std

    def _parts(self) -> list[torch.Tensor]:
        return [getattr(self, f"dft_{j}") for j in range(self.n_parts)]

    @classmethod
    def from_card(cls, spec: Mapping[str, Any], **kwargs: Any) -> LogMelFrontEnd:
        """From the ``input`` entry of a model card (``feature_config``, ``mean``, ``std``; chapter 5's cards)."""
        if spec.get("kind", "logmel") != "logmel":
            raise ValueError(f"the front end computes log-mel features, the card asks for {spec.get('kind')!r}")
        return cls(FeatureConfig(**spec["feature_config"]), spec["mean"], spec["std"], **kwargs)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs: Any) -> LogMelFrontEnd:
        """From the log-mel cache of ``run_dir`` (chapter 1): its feature config and train-split statistics."""
        return cls.from_card(feature_meta(run_dir, "logmel") | {"kind": "logmel"}, **kwargs)
