"""Per-window level normalisation: every 5-s window is peak-normalised to one fixed level (chapters 1 and 6).

Training mixtures are peak-normalised when rendered (:func:`data_prep.render.render_mixture`, a peak drawn from
``DataConfig.peak_dbfs``, -6 to -1 dBFS), so a model never sees how loud a room was. Real recordings arrive at any
level; the streaming meter (:mod:`ersam_lib.experiments.meter`) and the exported program bring each window to the middle
of the training range before the model sees it, which makes the counts independent of the input gain.

A window whose peak lies below the *silence floor* is digital silence or dither: it is scaled by the gain a
floor-level window would get, never more, so quantisation noise is not blown up to full scale.
"""

from __future__ import annotations

import numpy as np

from .config import DataConfig

# The middle of the training mixtures' peak range (DataConfig.peak_dbfs, -6 to -1 dBFS): -3.5 dBFS.
TARGET_PEAK_DBFS: float = float(np.mean(DataConfig().peak_dbfs))
# -80 dBFS: below the quietest speech a phone records, above 16-bit dither (about -96 dBFS).
SILENCE_FLOOR_DBFS: float = -80.0


def peak_normalize(windows: np.ndarray, peak_dbfs: float = TARGET_PEAK_DBFS,
                   floor_dbfs: float = SILENCE_FLOOR_DBFS) -> np.ndarray:
    """Scale each row of ``windows`` (..., samples) so its peak is ``peak_dbfs``; float32 out.

    Rows quieter than ``floor_dbfs`` get the floor's gain (silence stays near silence). Scaling the input by any
    factor that keeps the rows above the floor leaves the output unchanged up to float rounding.
    """
    x = np.asarray(windows, np.float32)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"windows must have a non-empty last (samples) axis, got shape {x.shape}")
    peak = np.abs(x).max(axis=-1, keepdims=True).astype(np.float64)
    gain = 10 ** (peak_dbfs / 20) / np.maximum(peak, 10 ** (floor_dbfs / 20))
    return (x * gain).astype(np.float32)
