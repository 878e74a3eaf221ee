"""The layout of ``RUN_DIR``: how chapters hand results to later chapters (files, never hidden state).

::

    RUN_DIR/
      summary.json            the runner's run summary: per chapter status, wall time, metrics    (ersam_lib.runner)
      metrics/<chapter>.json  what each chapter recorded with :func:`record_metrics`          (the notebooks)
      executed/<nb>.ipynb     papermill-executed copies (what the book renders)                  (ersam_lib.runner)
      logs/<nb>.log           each notebook's streamed output                                    (ersam_lib.runner)
      data/                   chapter 1: config.json, manifest.parquet, manifest.sha256, dataset.json,
                              features/<kind>/{<split>.npy, <split>_y.npy, meta.json}            (data_prep.build)
      profiling/              chapter 2: operators.csv, rule.json, lut.json, costmodel.json, correction.pkl,
                              train_archs.csv, validation.csv, validation_baselines.csv  (chapter 2 via profiling)
      teacher/                chapter 3: teacher.pt (state dict), teacher.json       (ersam_lib.fit via teacher)
      supernet/               chapter 4: runs/<variant>/{checkpoint.pt, history.json},
                              ablation.csv, ablation.json, supernet.pt                          (ersam_lib.ablation)
      search/                 chapter 5: objectives.json (cache), history.json, strategies.csv, frontier.csv,
                              baselines/<name>.{pt,json}, models/<name>.{pt,json} (cards), chosen.json
                                                                   (chapter 5 via ersam_lib.search and .frontier)
      deploy/                 chapter 6: exported programs, model cards                          (ersam_lib.deploy)

This module owns that layout: every stage asks it for its folder (:func:`stage_dir`) and for the paths of the
well-known files (:func:`run_file`, :func:`require`), so that a file's name and the chapter that writes it are
stated once, here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .io import atomic_write_json, read_json

__all__ = [
    "executed_path", "feature_dir", "load_metrics", "log_path", "metrics_path", "missing_message", "record_metrics",
    "require", "run_file", "stage_dir", "summary_path", "variant_dir"
]

STAGES: tuple[str, ...] = ("data", "profiling", "teacher", "supernet", "search", "deploy")

# The well-known files: key -> (stage, file name, the chapter that writes it).
FILES: dict[str, tuple[str, str, str]] = {
    "data_config": ("data", "config.json", "01"),
    "manifest": ("data", "manifest.parquet", "01"),
    "manifest_sha": ("data", "manifest.sha256", "01"),
    "dataset": ("data", "dataset.json", "01"),
    "operators": ("profiling", "operators.csv", "02"),
    "rule": ("profiling", "rule.json", "02"),
    "lut": ("profiling", "lut.json", "02"),
    "costmodel": ("profiling", "costmodel.json", "02"),
    "correction": ("profiling", "correction.pkl", "02"),
    "train_archs": ("profiling", "train_archs.csv", "02"),
    "validation": ("profiling", "validation.csv", "02"),
    "validation_baselines": ("profiling", "validation_baselines.csv", "02"),
    "teacher_weights": ("teacher", "teacher.pt", "03"),
    "teacher_info": ("teacher", "teacher.json", "03"),
    "ablation_csv": ("supernet", "ablation.csv", "04"),
    "ablation_json": ("supernet", "ablation.json", "04"),
    "supernet": ("supernet", "supernet.pt", "04"),
    "objectives": ("search", "objectives.json", "05"),
    "search_history": ("search", "history.json", "05"),
    "strategy_curves": ("search", "strategies.csv", "05"),
    "frontier": ("search", "frontier.csv", "05"),
    "chosen": ("search", "chosen.json", "05"),
}
CHECKPOINT = "checkpoint.pt"  # the per-epoch training checkpoint in a training folder (chapters 3-4)
HISTORY = "history.json"  # the per-epoch history beside it
SUMMARY = "summary.json"


def stage_dir(run_dir: str | os.PathLike, stage: str, create: bool = True) -> Path:
    """Folder of one pipeline stage inside ``run_dir`` (created unless ``create=False``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    path = Path(run_dir) / stage
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def run_file(run_dir: str | os.PathLike, key: str) -> Path:
    """Path of the well-known file ``key`` of :data:`FILES` (it may not exist yet)."""
    if key not in FILES:
        raise KeyError(f"unknown run file {key!r}; expected one of {', '.join(FILES)}")
    stage, name, _ = FILES[key]
    return Path(run_dir) / stage / name


def require(run_dir: str | os.PathLike, key: str) -> Path:
    """Path of a file an earlier chapter must have written; a clear error names the chapter to run first."""
    path = run_file(run_dir, key)
    if not path.exists():
        raise FileNotFoundError(missing_message(path, run_dir, FILES[key][2]))
    return path


def missing_message(path: str | os.PathLike, run_dir: str | os.PathLike, chapter: str) -> str:
    """The one-line message for a file chapter ``chapter`` writes and that is not there."""
    return (f"{path} is missing: run chapter {chapter} with the same RUN_DIR first "
            f"(python -m ersam_lib run --run-dir {run_dir} --only {chapter})")


def feature_dir(run_dir: str | os.PathLike, kind: str) -> Path:
    """``RUN_DIR/data/features/<kind>``: the feature cache of one kind (chapter 1)."""
    return Path(run_dir) / "data" / "features" / kind


def variant_dir(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/supernet/runs/<name>``: the training folder of one supernet variant (chapter 4)."""
    return stage_dir(run_dir, "supernet") / "runs" / name


def executed_path(run_dir: str | os.PathLike, notebook: str) -> Path:
    """The papermill-executed copy of ``notebook`` (a file name such as ``01_data.ipynb``)."""
    return Path(run_dir) / "executed" / notebook


def log_path(run_dir: str | os.PathLike, stem: str) -> Path:
    """The streamed output of one notebook run (``stem`` such as ``01_data``)."""
    return Path(run_dir) / "logs" / f"{stem}.log"


def summary_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SUMMARY


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
