"""Results recorded on other machines that ship with the package (``ersam_lib/recorded/``).

A chapter that shows a run it cannot repeat within its time budget (chapter 4's ablation at a larger budget on a
GPU) reads the recorded tables from here, so that the page renders the same from a checkout or an installed wheel.
Each table says where and how it was made in ``recorded/README.md`` and in ``benchmarks/archive/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["recorded_dir", "recorded_tables"]


def recorded_dir() -> Path:
    """The folder of recorded results inside the installed package."""
    return Path(str(resources.files("ersam_lib") / "recorded"))


def recorded_tables(pattern: str) -> list[Path]:
    """The recorded files matching ``pattern`` (a glob such as ``"ablation_budget_*.csv"``), sorted by name."""
    return sorted(recorded_dir().glob(pattern))
