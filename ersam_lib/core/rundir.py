"""The layout of ``RUN_DIR``: how chapters hand results to later chapters (files, never hidden state).

::

    RUN_DIR/
      summary.json            the runner's run summary: per chapter status, wall time, metrics    (ersam_lib.app.runner)
                              (updated under the lock .summary.json.lock)
      metrics/<notebook>.json what each chapter recorded with :func:`record_metrics`          (the notebooks)
      executed/<nb>.ipynb     papermill-executed copies (what the book renders)                  (ersam_lib.app.runner)
      logs/<nb>.log           each notebook's streamed output                                    (ersam_lib.app.runner)
      data/                   chapter 1: manifest.parquet, manifest.sha256, config.json, dataset.json,
                              features/<kind>/{<split>.npy, <split>_y.npy, meta.json}            (data_prep.build)
      profiling/              chapter 2: operators.csv, backends.csv, rule.json, lut.json, correction.json,
                              costmodel.json, train_archs.csv, validation.csv, validation_baselines.csv, the ExecuTorch
                              model: costmodel_executorch.json, correction_executorch.json,
                              validation_executorch.csv                              (chapter 2 via profiling)
      teacher/                chapter 3: teacher.pt (state dict), teacher.json  (ersam_lib.training.fit, models.teacher)
                              pool/round_<r>.{npy,_y.npy,parquet,json}: dynamic mixing's extra rounds
                                                                                        (data_prep.dynamic)
      supernet/               chapter 4: runs/<variant>/{checkpoint.pt, history.json},
                              ablation.csv, ablation.json, supernet.pt               (ersam_lib.experiments.ablation)
      search/                 chapter 5: objectives.json (cache), history.json, strategies.csv, frontier.csv,
                              baselines/<name>.{pt,json}, models/<name>.{pt,json} (cards), chosen.json
                                                 (chapter 5 via ersam_lib.experiments.search and .frontier)
      deploy/                 chapter 6: <name>_<precision>.pte, <name>_float_onnx.onnx with their .json cards,
                              precision.csv, programs.csv, party/ (party.wav, .rttm, .json), party_eval.json
                                                          (ersam_lib.experiments.deploy, .meter, .rttm_eval)

This module owns that layout: every stage asks it for its folder (:func:`stage_dir`) and for the paths of the
well-known files (:func:`run_file`, :func:`require`); a file's name and the stage that writes it are stated once, in
the registry (:mod:`ersam_lib.core.stages`), and errors name the stage's chapter and the command that reruns it.

Every weight file (``*.pt``) has its SHA-256 beside it (``*.pt.sha256``, :func:`ersam_lib.core.io.atomic_torch_save`),
checked on every load. Every derived file records what it was made from (the data's content key, upstream hashes)
and is reused only when that matches; each stage writes its "done" marker last (``config.json`` for the manifest,
``meta.json`` for a feature kind, ``dataset.json`` for the data, ``teacher.json``, ``costmodel.json``). A file that is
missing, damaged or stale raises an error whose one line names it and the command that rebuilds it (:func:`damaged`,
:func:`rebuild_command`).
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import ArtifactError, read_json, update_json
from .stages import STAGES, Stage, find_stage, stage_of_file

__all__ = [
    "check_made_from", "check_run_dir", "damaged", "executed_path", "feature_dir", "load_metrics", "log_path",
    "metrics_path", "missing_message", "read_run_json", "read_summary", "rebuild_command", "rebuilt_chapter",
    "record_metrics", "require", "run_file", "stage_dir", "summary_path", "summary_problem", "variant_dir"
]

CHECKPOINT = "checkpoint.pt"  # the per-epoch training checkpoint in a training folder (chapters 3-4)
HISTORY = "history.json"  # the per-epoch history beside it
SUMMARY = "summary.json"


def stage_dir(run_dir: str | os.PathLike, stage: str, create: bool = True) -> Path:
    """Folder of one pipeline stage (its label, :mod:`ersam_lib.core.stages`) inside ``run_dir`` (created unless
    ``create=False``)."""
    folders = [s.label for s in STAGES if s.folder]
    found = find_stage(stage)
    if found is None or found.folder is None:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(folders)}")
    path = Path(run_dir) / found.folder
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def run_file(run_dir: str | os.PathLike, key: str) -> Path:
    """Path of the well-known file ``key`` (declared by the stage that writes it; it may not exist yet)."""
    return stage_of_file(key).path(run_dir, key)


def require(run_dir: str | os.PathLike, key: str) -> Path:
    """Path of a file an earlier chapter must have written; a clear error names the chapter to run first."""
    path = run_file(run_dir, key)
    if not path.exists():
        raise FileNotFoundError(missing_message(path, run_dir, stage_of_file(key).label))
    return path


def missing_message(path: str | os.PathLike, run_dir: str | os.PathLike, stage: str) -> str:
    """The one-line message for a file that the stage ``stage`` writes and that is not there."""
    return (f"{path} is missing: run chapter {find_stage(stage).chapter} with the same RUN_DIR first "
            f"({rebuild_command(run_dir, stage)})")


def rebuild_command(run_dir: str | os.PathLike, stage: str) -> str:
    """The command that (re)runs the stage ``stage`` (its label) of the run in ``run_dir`` (its scale and seed when
    known), shell-quoted."""
    opts: list[str] = []
    try:
        summary = read_json(summary_path(run_dir))
        opts = ["--scale", str(summary["scale"]), "--seed", str(summary["seed"])]
    except (OSError, ValueError, KeyError, TypeError):  # no (readable) summary: the defaults apply
        pass
    return shlex.join(["python", "-m", "ersam_lib", "run", "--run-dir", str(run_dir), *opts, "--only",
                       find_stage(stage).chapter])


def rebuilt_chapter(message: str) -> str | None:
    """The chapter whose rebuild an error message asks for (the ``--only NN`` of :func:`rebuild_command` in it), so
    that the runner's resume line starts there rather than at the chapter that met the damaged file."""
    found = re.findall(r"python -m ersam_lib run .*?--only '?(\d\d)\b", message)
    return min(found) if found else None


def damaged(path: str | os.PathLike, run_dir: str | os.PathLike, stage: str, reason: str) -> ArtifactError:
    """The error for a run file that is damaged or stale: one line naming it, why, and the command that rebuilds it
    (the stage ``stage``, its label).

    ``reason`` may be another error's message that starts with the path; it is not repeated.
    """
    return ArtifactError(f"{path} {reason.removeprefix(f'{path} ')}; rebuild it: {rebuild_command(run_dir, stage)}")


def check_made_from(path: str | os.PathLike, run_dir: str | os.PathLike, stage: str, recorded: str | None,
                    current: Callable[[], str | None], source: str = "data") -> None:
    """The one provenance check of the run's loaders: ``path`` (written by ``stage``) records the content key of what
    it was made from (``recorded``); ``current()`` reads what the run's ``source`` stage holds now (asked only when
    something was recorded). When both are known and differ, the error names the file, that the source was rebuilt
    since, and the command that rebuilds the file."""
    if recorded and (now := current()) and recorded != now:
        made = find_stage(source)
        raise damaged(path, run_dir, stage, f"was made from other {made.label} than the run holds now (its content key "
                      f"differs: chapter {made.chapter} was rebuilt since, or this file was)")


def read_run_json(run_dir: str | os.PathLike, key: str) -> Any:
    """The well-known JSON file ``key``; missing or damaged, the error names the chapter that rewrites it."""
    path = require(run_dir, key)
    try:
        return read_json(path)
    except ArtifactError as e:
        raise damaged(path, run_dir, stage_of_file(key).label, str(e)) from None


def check_run_dir(run_dir: str | os.PathLike, create: bool = True) -> Path:
    """Make sure files can be written in ``run_dir`` (created unless ``create=False``, then its nearest existing
    parent is checked instead); a one-line error otherwise. The command lines call it before any work."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"run folder {path} is a file, not a folder")
    probe = path
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot create run folder {path}: {e.strerror or e}") from None
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"run folder {path} lies under the file {probe}")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-check."):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write into {probe} (for run folder {path}): {e.strerror or e}") from None
    return path


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


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``summary.json``, checked to be one (an object with ``scale``, ``seed`` and ``chapters``, each
    chapter an object with a ``status``); a missing, damaged or foreign file is a one-line error naming it."""
    path = summary_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: not a run folder (run the pipeline into {run_dir} first)")
    summary = read_json(path)
    problem = summary_problem(summary)
    if problem:
        raise ArtifactError(f"{path} is not a run summary of this book: {problem}")
    return summary


def summary_problem(summary: Any) -> str | None:
    """What makes ``summary`` (parsed JSON) unlike a run summary, or ``None`` when it is one."""
    if not isinstance(summary, dict):
        return f"it holds a JSON {type(summary).__name__}, not an object"
    missing = sorted({"scale", "seed", "chapters"} - set(summary))
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not isinstance(summary["chapters"], dict):
        return "its chapters are not an object"
    for name, entry in summary["chapters"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
            return f"chapter {name!r} has no status"
        if not isinstance(entry.get("metrics", {}), dict) or not isinstance(entry.get("executed", ""), str):
            return f"chapter {name!r} has metrics or an executed copy of the wrong type"
    return None


def metrics_path(run_dir: str | os.PathLike, notebook: str) -> Path:
    """``RUN_DIR/metrics/<notebook>.json``: what the chapter ``notebook`` (a stem, ``05_search``) recorded."""
    return Path(run_dir) / "metrics" / f"{notebook}.json"


def record_metrics(run_dir: str | os.PathLike, stage: str | Stage, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into the record of ``stage`` (its label, or a :class:`~ersam_lib.core.stages.Stage` declared
    elsewhere); the runner copies them into ``summary.json``.

    Every metric must be one the stage declares (:mod:`ersam_lib.core.stages`: its kind says how ``compare`` checks it):
    an undeclared one, a renamed one too, is a ``ValueError`` naming it. Values must be JSON-serialisable numbers,
    strings, lists or dicts; tests read them back and assert on them, so record measured values, never constants.
    The runner clears the record when the chapter starts, so it holds this execution's metrics only. It returns
    nothing, so a chapter cell that ends with it displays no path of the build machine.
    """
    found = stage if isinstance(stage, Stage) else next((s for s in STAGES if s.label == stage), None)
    if found is None:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(s.label for s in STAGES)}")
    undeclared = found.undeclared(metrics)
    if undeclared:
        raise ValueError(f"stage {found.label!r} does not declare the metric(s) {', '.join(undeclared[:8])}: declare "
                         f"them (their kind) in ersam_lib/core/stages.py before recording them")
    update_json(metrics_path(run_dir, found.notebook), lambda current: (current or {}) | metrics)


def load_metrics(run_dir: str | os.PathLike, notebook: str) -> dict[str, Any]:
    """Metrics the chapter ``notebook`` (a stem) recorded (empty dict if it recorded none)."""
    path = metrics_path(run_dir, notebook)
    return read_json(path) if path.exists() else {}
