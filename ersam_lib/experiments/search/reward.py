"""Speckhard et al.'s reward, what chapter 5's searches trade accuracy against energy and memory with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Reward"]


@dataclass(frozen=True)
class Reward:
    """Speckhard et al.'s reward ``R = ACC - b max(0, E - E0) - c max(0, M - M0)`` (chapter 5).

    Units: ``acc`` is a fraction in [0, 1] (0.02 = two accuracy points); ``energy_mj`` is the energy of one
    inference in mJ (here one 5-s segment); ``memory_kb`` is the model's static memory in kB (1 kB = 1000 bytes;
    Speckhard's TFLite file size, here the int8 weights). The defaults are the paper's, measured on a Pixel 4 XL:
    E0 = 1.25 mJ, b = 0.02 / 0.75 mJ (0.75 mJ more energy must buy two accuracy points), M0 = 60 kB,
    c = 0.02 / 30 kB (a 90 kB model needs two points more than a 60 kB one). :meth:`b_prime` is the milder energy
    slope b' = 0.02 / 1.75 mJ; :meth:`scaled` carries the same trade-off to another device's thresholds.
    """

    e0_mj: float = 1.25
    b_per_mj: float = 0.02 / 0.75
    m0_kb: float = 60.0
    c_per_kb: float = 0.02 / 30.0

    def __post_init__(self) -> None:
        for name in ("e0_mj", "b_per_mj", "m0_kb", "c_per_kb"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Reward.{name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def b_prime(cls, **overrides: float) -> Reward:
        """Speckhard's milder energy penalty b' = 0.02 / 1.75 mJ (their "-b'" searches)."""
        return cls(**({"b_per_mj": 0.02 / 1.75} | overrides))

    @classmethod
    def scaled(cls, e0_mj: float, m0_kb: float, harsh: bool = True) -> Reward:
        """The paper's trade-off relative to new thresholds: two points per 0.6 E0 (b; 1.4 E0 for b') above E0
        and per 0.5 M0 above M0. Use it when energies are not a phone's (the host's are tens of mJ)."""
        return cls(e0_mj, 0.02 / ((0.75 if harsh else 1.75) / 1.25 * e0_mj), m0_kb, 0.02 / (0.5 * m0_kb))

    def __call__(self, acc: Any, energy_mj: Any, memory_kb: Any) -> Any:
        """The reward; floats in, float out (arrays or pandas columns work elementwise)."""
        r = (acc - self.b_per_mj * np.maximum(0.0, np.subtract(energy_mj, self.e0_mj))
             - self.c_per_kb * np.maximum(0.0, np.subtract(memory_kb, self.m0_kb)))
        return float(r) if np.ndim(r) == 0 else r

