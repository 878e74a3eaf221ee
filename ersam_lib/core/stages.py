"""The book's stages, declared once: a chapter is a label, its notebook, its files and its metrics.

Every other module asks this registry: :mod:`ersam_lib.core.rundir` for a file's folder and the chapter that rebuilds
it, :func:`ersam_lib.core.rundir.record_metrics` for the metrics a chapter may record (an undeclared one is refused),
and :mod:`ersam_lib.app.compare` for how each metric is checked against the reference (its *kind*, whose tolerance
:data:`KINDS` gives). Chapter numbers exist for ordering and display only; code names a stage by its label.

A metric is declared by a pattern over its dotted name (``acc_largest.*`` covers the dict a chapter records under
``acc_largest``; :func:`fnmatch.fnmatchcase`), the first matching pattern of its stage decides, and
:data:`COMMON_METRICS` (what the runner adds to every chapter) come first. Adding a chapter = one notebook and one
:class:`Stage` here (plus its module and tests).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COMMON_METRICS", "KINDS", "Metric", "STAGES", "Stage", "find_stage", "flatten", "stage", "stage_of_file"]

# How each kind of metric is compared with the reference (compare.py): a tolerance, exact, or not checked.
KINDS: dict[str, dict[str, Any]] = {
    "machine": {"check": False},  # timings and what is computed from them (energies, the cost model's errors and
    #                               fitted exponents, search rewards): they measure the machine, printed only
    "version": {"check": False},  # library versions, threads: facts about the machine, printed only
    "outcome": {"check": False},  # what the search found and what chapter 6 made of it (the front, the finalists,
    #                               which baselines they dominate, the deployed model's scores): the machine's
    #                               latencies steer the search, so a rerun can find other architectures
    "cache": {"check": False},  # what a run's caches already held: a resumed run computes fewer, so printed only
    "accuracy": {"abs_tol": 0.03},  # accuracies, errors, rates and shares in [0, 1]: within 3 points
    "difference": {"abs_tol": 0.05},  # a difference of two accuracies (a teacher's lead, final minus full): each side
    #                                   moves by up to 3 points, so a relative tolerance on a small gap means nothing
    "measure": {"rel_tol": 0.10},  # other real numbers (MAE, sizes, ratios): within 10 %
    "count": {},  # integers (samples, parameters, MACs): exact
    "flag": {},  # booleans (a claim that holds): exact
    "hash": {},  # content hashes: exact
    "text": {},  # strings (configuration, statuses): exact
    "name": {},  # names: exact, except a name that carries a searched architecture's id (searched-1-58790d3a1fe9),
    #              which a run on another machine draws differently: printed only (compare.py decides per value)
}


@dataclass(frozen=True)
class Metric:
    """How one declared metric is read: its kind (a key of :data:`KINDS`) and its unit (for display)."""

    kind: str
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; expected one of {', '.join(KINDS)}")


def _spec(*entries: tuple[str, str] | tuple[str, str, str]) -> tuple[tuple[str, Metric], ...]:
    return tuple((pattern, Metric(*rest)) for pattern, *rest in entries)


# What the runner adds to every chapter's entry (summary.json): its status and wall time.
COMMON_METRICS = _spec(("run.status", "text"), ("run.wall_s", "machine", "s"))

_SPLITS = ("train", "val", "test", "real_val", "real_test", "real_test_other")


@dataclass(frozen=True)
class Stage:
    """One chapter of the pipeline.

    ``label`` names it in code; ``chapter`` (two digits) orders and numbers it; ``notebook`` is its notebook's stem in
    ``notebooks/``; ``folder`` its folder in ``RUN_DIR`` (``None``: it writes none); ``files`` the well-known files it
    writes there (key -> file name, :func:`ersam_lib.core.rundir.run_file`); ``metrics`` what it may record.
    """

    label: str
    chapter: str
    notebook: str
    title: str
    folder: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    metrics: tuple[tuple[str, Metric], ...] | Mapping[str, str] = ()  # a mapping: pattern -> kind

    def __post_init__(self) -> None:
        if isinstance(self.metrics, Mapping):  # the short form, for a stage declared in a few words
            object.__setattr__(self, "metrics", tuple((k, Metric(v)) for k, v in self.metrics.items()))
        if not (len(self.chapter) == 2 and self.chapter.isdigit() and self.notebook.startswith(self.chapter + "_")):
            raise ValueError(f"stage {self.label!r}: chapter must be two digits that start its notebook's name, got "
                             f"{self.chapter!r} and {self.notebook!r}")
        if self.files and self.folder is None:
            raise ValueError(f"stage {self.label!r} declares files but no folder")

    def metric(self, name: str) -> Metric | None:
        """The declaration of the dotted metric ``name`` (first matching pattern), or ``None`` if undeclared."""
        for pattern, metric in (*COMMON_METRICS, *self.metrics):
            if fnmatch.fnmatchcase(name, pattern):
                return metric
        return None

    def undeclared(self, metrics: Mapping[str, Any]) -> list[str]:
        """The dotted names in ``metrics`` (nested dicts and lists flattened) that this stage does not declare."""
        return sorted(name for name in flatten(dict(metrics)) if self.metric(name) is None)

    def path(self, run_dir: str | os.PathLike, key: str) -> Path:
        """``RUN_DIR/<folder>/<file>`` of the well-known file ``key`` of this stage."""
        if key not in self.files:
            raise KeyError(f"stage {self.label!r} writes no file {key!r}; it writes {', '.join(self.files) or 'none'}")
        return Path(run_dir) / str(self.folder) / self.files[key]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts and lists under dotted names (``{"a": {"b": [1, 2]}}`` -> ``a.b.0``, ``a.b.1``)."""
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in items:
        out |= flatten(sub, f"{prefix}.{key}" if prefix else key)
    return out


STAGES: tuple[Stage, ...] = (
    Stage("setup", "00", "00_setup", "Setup: the tools and the first features", metrics=_spec(
        ("logmel_ms", "machine", "ms"), ("logmel_shape.*", "count"), ("stft_shape.*", "count"),
        ("pitch_*_hz", "measure", "Hz"), ("threads", "version"), ("torch", "version"), ("torchaudio", "version"))),
    Stage("data", "01", "01_data", "LibriSpeech-SAM: the data set", folder="data", files={
        "data_config": "config.json", "manifest": "manifest.parquet", "manifest_sha": "manifest.sha256",
        "dataset": "dataset.json"}, metrics=_spec(
        ("K", "count"), ("n_classes", "count"), ("class_set", "text"), ("class_imbalance", "count"),
        ("agreement_*", "accuracy"), ("floor_acc_*", "accuracy"), ("floor_chance", "accuracy"),
        ("floor_mae_*", "measure"), ("overlap_k2", "measure"), ("manifest_sha256", "hash"),
        ("build_total_s", "machine", "s"), ("mixtures_per_s", "machine", "1/s"),
        *((f"n_{s}", "count") for s in _SPLITS), *((f"speakers_{s}", "count") for s in _SPLITS),
        ("speaker_overlap_total", "count"), ("source", "text"), ("real_source", "text"), ("splits.*", "text"),
        ("train_sources.*", "text"))),
    Stage("profiling", "02", "02_profiling", "Operator costs on the target device", folder="profiling", files={
        "operators": "operators.csv", "backends": "backends.csv", "rule": "rule.json", "lut": "lut.json",
        "costmodel": "costmodel.json", "correction": "correction.json",
        "costmodel_executorch": "costmodel_executorch.json", "correction_executorch": "correction_executorch.json",
        "runtime_validation": "validation_executorch.csv", "train_archs": "train_archs.csv",
        "validation": "validation.csv", "validation_baselines": "validation_baselines.csv"}, metrics=_spec(
        ("backend_median_ms.*", "machine", "ms"), ("baselines_abs_rel_err.*", "machine"),
        ("baselines_avg_power_mw_12h.*", "machine", "mW"), ("baselines_energy_mj.*", "machine", "mJ"),
        ("conv_blowup_ratio", "machine"), ("executorch_eager_rank", "machine"), ("executorch_val_n", "version"),
        ("executorch_val_*", "machine"), ("val_n", "count"), ("val_*", "machine"),
        ("first_call_over_median", "machine"), ("grid_points", "count"), ("lut_entries", "count"),
        ("n_train_archs", "count"), ("imported_lookup_matches", "flag"), ("reloaded_prediction_matches", "flag"),
        ("rule_allowed_share", "machine"), ("rule_exponents.*", "machine"), ("rule_max_op_ms", "machine", "ms"),
        ("rule_r2", "machine"), ("statistic", "text"))),
    Stage("teacher", "03", "03_teacher", "The teacher", folder="teacher", files={
        "teacher_weights": "teacher.pt", "teacher_info": "teacher.json"}, metrics=_spec(
        ("*_params", "count"), ("teacher_macs", "count"), ("teacher_train_samples", "count"),
        ("teacher_mix_rounds", "count"), ("*_train_s", "machine", "s"), ("teacher_mix_s", "machine", "s"),
        ("*_acc", "accuracy"), ("*_mae", "measure"), ("teacher_gap_*", "difference"), ("teacher_kind", "text"),
        ("teacher_lead_verdict.*", "outcome"), ("teacher_lead_p.*", "outcome"),
        ("pretrained_wav2vec2_available", "flag"), ("train_sources.*", "text"))),
    Stage("supernet", "04", "04_supernet", "The supernet and efficient distillation", folder="supernet", files={
        "ablation_csv": "ablation.csv", "ablation_json": "ablation.json", "supernet": "supernet.pt"},
        metrics=_spec(
        ("acc_largest.*", "accuracy"), ("acc_middle.*", "accuracy"), ("acc_smallest.*", "accuracy"),
        ("query_rate.*", "accuracy"), ("final_query_rate", "accuracy"), ("selective_min_query_rate", "accuracy"),
        ("teacher_val_acc", "accuracy"), ("claim_holds.*", "flag"), ("final_minus_full_*", "difference"),
        ("full_minus_none.*", "difference"), ("full_vs_none_verdict.*", "outcome"), ("full_vs_none_p.*", "outcome"),
        ("claim_verdict.*", "outcome"),
        ("final_scores.*_acc_*", "accuracy"), ("final_scores.*_mae_*", "measure"), ("final_variant", "text"),
        ("smallest_errors_teacher_right", "measure"), ("space_size", "count"), ("supernet_params", "count"),
        ("teacher_samples.selective*", "measure"),  # what a gate let through follows the students' training
        ("teacher_samples.*", "count"), ("total_train_s", "machine", "s"), ("wall_s.*", "machine", "s"),
        ("variants.*", "text"))),
    Stage("search", "05", "05_search", "Search and the accuracy-energy frontier", folder="search", files={
        "objectives": "objectives.json", "search_history": "history.json", "strategy_curves": "strategies.csv",
        "frontier": "frontier.csv", "chosen": "chosen.json"}, metrics=_spec(
        ("baseline_energy_mj.*", "machine", "mJ"), ("baseline_*_acc.*", "accuracy"), ("baseline_*_mae.*", "measure"),
        ("peer_*_acc.*", "accuracy"), ("peer_*_mae.*", "measure"), ("peer_eager_ms.*", "machine", "ms"),
        ("baselines_dominated.*", "outcome"), ("baseline_verdicts.*", "outcome"), ("beats_random.*", "outcome"),
        ("vs_random_verdict.*", "outcome"),
        ("best_reward.*", "machine"),
        ("hypervolume.*", "machine"), ("hypervolume_std.*", "machine"), ("calibration_scale", "machine"),
        ("chosen.*", "name"), ("finalists.*", "name"), ("default_budget_mj", "outcome", "mJ"),
        ("ersam_budget_best_acc.*", "outcome"), ("ersam_budgets_mj.*", "machine", "mJ"),
        ("finalist_*", "outcome"), ("front_size", "outcome"), ("latency_ratio_vs_crnn", "outcome"),
        ("mobilenetv2_energy_mj_device", "machine", "mJ"), ("n_evaluations", "count"), ("space_size", "outcome"),
        ("supernet_cache_misses", "cache"), ("*_s", "machine", "s"))),
    Stage("deploy", "06", "06_deploy", "Deployment and the social-ambiance meter", folder="deploy", files={
        "deploy_precision": "precision.csv", "deploy_programs": "programs.csv", "party_eval": "party_eval.json",
        "headline": "headline.json"},
        metrics=_spec(
        ("float_*_acc.*", "accuracy"), ("int8_*_acc.*", "accuracy"), ("int8_*_drop_points", "outcome"),
        ("int8_*_verdict", "outcome"), ("int8_*_mcnemar_p", "outcome"),
        ("executorch_int8_float_ratio", "outcome"), ("executorch_*_ms", "machine", "ms"),
        ("latency_ms.*", "machine", "ms"), ("peak_mb.*", "outcome", "MB"), ("size_kb.*", "outcome", "kB"),
        ("frontend_*", "outcome"), ("network_*", "outcome"), ("meter_program", "name"), ("meter_*", "outcome"),
        ("rttm_*", "outcome"),
        ("model", "name"), ("models.*", "name"), ("model_role", "outcome"), ("onnx_int8_exported", "flag"),
        ("party_split", "text"), ("calibration_windows", "machine"), ("party_duration_s", "machine", "s"),
        ("export_s.*", "machine", "s"), ("quantize_s.*", "machine", "s"), ("*_s", "machine", "s"))),
)


def find_stage(key: str, stages: Iterable[Stage] = STAGES) -> Stage | None:
    """The stage whose label, notebook stem or chapter number is ``key`` (``"search"``, ``"05_search"``,
    ``"05"``), or ``None``."""
    return next((s for s in stages if key in (s.label, s.notebook, s.chapter)), None)


def stage(key: str, stages: Iterable[Stage] = STAGES) -> Stage:
    """:func:`find_stage`, with an error that lists the stages when there is none."""
    stages = tuple(stages)
    found = find_stage(key, stages)
    if found is None:
        raise ValueError(f"unknown stage {key!r}; the stages are {', '.join(s.label for s in stages)}")
    return found


def stage_of_file(key: str, stages: Iterable[Stage] = STAGES) -> Stage:
    """The stage that writes the well-known file ``key``."""
    stages = tuple(stages)
    for s in stages:
        if key in s.files:
            return s
    raise KeyError(f"unknown run file {key!r}; expected one of {', '.join(k for s in stages for k in s.files)}")
