"""ERSAM's hardware-aware operator rule (chapter 2 fits it; chapter 4's search space obeys it).

:meth:`CostRule.fit` turns chapter 2's Conv1d timing grid into a rule: no operator where large channel counts, a large
kernel and a long sequence coexist. Chapter 2 saves it as ``RUN_DIR/profiling/rule.json``; :func:`load_rule` is how
chapters 3-5 read it back (``None`` when chapter 2 has not run: the space is then unfiltered).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.io import ArtifactError, atomic_write_json, read_json
from ..core.rundir import damaged, run_file

__all__ = ["CostRule", "load_rule"]


@dataclass
class CostRule:
    """ERSAM's operator rule: a Conv1d (c -> c channels, kernel k, sequence length L) is allowed when its
    predicted latency on the profiled device stays under ``max_op_ms``.

    The prediction is a power law fitted to the grid, ``log t = b0 + b1 log c + b2 log k + b3 log L``: the latency
    grows with the *product* of the three, so any one may be large as long as the others are not.
    """

    coef: list[float]
    max_op_ms: float
    r2: float = float("nan")
    device: str = "unknown"
    n_points: int = 0

    @classmethod
    def fit(cls, grid: pd.DataFrame, max_op_ms: float, device: str = "unknown") -> CostRule:
        """Least-squares fit on the stride-1 Conv1d rows of the table of
        :func:`ersam_lib.experiments.profiling.profile_operators`."""
        d = grid[(grid["op"] == "conv1d") & (grid["stride"] == 1)]
        if len(d) < 4:
            raise ValueError(f"need >= 4 stride-1 conv1d measurements to fit the rule, got {len(d)}")
        x = cls._design(d["channels"].to_numpy(), d["kernel"].to_numpy(), d["seq_len"].to_numpy())
        y = np.log(d["median"].to_numpy())
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        r2 = 1 - np.sum((y - x @ coef) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
        return cls(coef=[float(c) for c in coef], max_op_ms=float(max_op_ms), r2=float(r2), device=device,
                   n_points=len(d))

    @staticmethod
    def _design(c: Any, k: Any, t: Any) -> np.ndarray:
        c, k, t = (np.log(np.asarray(v, dtype=float)) for v in (c, k, t))
        return np.stack([np.ones_like(c), c, k, t], axis=-1)

    def predict_ms(self, channels: int, kernel: int, seq_len: int) -> float:
        return float(np.exp(self._design([channels], [kernel], [seq_len])[0] @ np.asarray(self.coef)))

    def allows(self, channels: int, kernel: int, seq_len: int) -> bool:
        """True when a ``channels``-wide Conv1d with ``kernel`` over ``seq_len`` frames fits the budget."""
        if min(channels, kernel, seq_len) < 1:
            raise ValueError(f"channels, kernel and seq_len must be >= 1, got {channels}, {kernel}, {seq_len}")
        return self.predict_ms(channels, kernel, seq_len) <= self.max_op_ms

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CostRule:
        """The rule saved in ``path``; a damaged or malformed file raises :class:`~ersam_lib.core.io.ArtifactError`."""
        doc = read_json(path)
        try:
            rule = cls(**doc)
            ok = len(rule.coef) == 4 and np.isfinite(rule.coef).all() and rule.max_op_ms > 0
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{path} is not a cost rule ({e})") from None
        if not ok:
            raise ArtifactError(f"{path} is not a cost rule (needs 4 finite coefficients and max_op_ms > 0)")
        return rule


def load_rule(run_dir: str | os.PathLike) -> CostRule | None:
    """Chapter 2's rule from ``RUN_DIR/profiling/rule.json``, or ``None`` if chapter 2 has not run (chapters 3-5)."""
    path = run_file(run_dir, "rule")
    if not path.exists():
        return None
    try:
        return CostRule.load(path)
    except ArtifactError as e:
        raise damaged(path, run_dir, "profiling", str(e)) from None
