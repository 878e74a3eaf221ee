"""The layout of ``RUN_DIR``: how chapters hand results to later chapters (files, never hidden state).

::

    RUN_DIR/
      summary.json            the runner's run summary: per chapter status, wall time, metrics
      metrics/<chapter>.json  what each chapter recorded with :func:`record_metrics`
      executed/<nb>.ipynb     papermill-executed copies (what the book renders)
      logs/<nb>.log           each notebook's streamed output
      data/                   chapter 1: manifest, manifest hash, feature cache      (data_prep)
      profiling/              chapter 2: operator LUT, predictor, validation table    (ersam_lib.profiling)
      teacher/                chapter 3: teacher weights and report                   (ersam_lib.teacher)
      supernet/               chapter 4: supernet checkpoints, ablation table         (ersam_lib.supernet/distill)
      search/                 chapter 5: search history, Pareto frontier              (ersam_lib.search)
      deploy/                 chapter 6: exported models, quantised accuracy          (ersam_lib.deploy)

Every stage asks this module for its folder (``stage_dir(run_dir, "data")``) so that one place owns the layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .io import atomic_write_json, read_json

STAGES: tuple[str, ...] = ("data", "profiling", "teacher", "supernet", "search", "deploy")


def stage_dir(run_dir: str | os.PathLike, stage: str, create: bool = True) -> Path:
    """Folder of one pipeline stage inside ``run_dir`` (created unless ``create=False``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    path = Path(run_dir) / stage
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def require_stage(run_dir: str | os.PathLike, stage: str, filename: str, chapter: str) -> Path:
    """Path of a file an earlier chapter must have written; a clear error names the chapter to run first."""
    path = Path(run_dir) / stage / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run chapter {chapter} with the same RUN_DIR first "
            f"(python -m ersam_lib run --run-dir {run_dir} --only {chapter})"
        )
    return path


def metrics_path(run_dir: str | os.PathLike, chapter: str) -> Path:
    return Path(run_dir) / "metrics" / f"{chapter}.json"


def record_metrics(run_dir: str | os.PathLike, chapter: str, metrics: dict[str, Any]) -> Path:
    """Merge ``metrics`` into ``RUN_DIR/metrics/<chapter>.json``; the runner copies them into ``summary.json``.

    ``chapter`` is the notebook's two-digit prefix (``"01"``). Values must be JSON-serialisable numbers, strings,
    lists or dicts; tests read them back and assert on them, so record measured values, never constants.
    """
    path = metrics_path(run_dir, chapter)
    current = read_json(path) if path.exists() else {}
    current.update(metrics)
    return atomic_write_json(path, current)


def load_metrics(run_dir: str | os.PathLike, chapter: str) -> dict[str, Any]:
    """Metrics a chapter recorded (empty dict if it recorded none)."""
    path = metrics_path(run_dir, chapter)
    return read_json(path) if path.exists() else {}
