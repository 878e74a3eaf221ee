"""A run against reference metrics (the reviewer's check; the runner prints it at the end of a full run).

``python -m ersam_lib compare RUN_DIR`` reads the metrics every chapter recorded in ``RUN_DIR/summary.json`` and sets
each one beside the committed reference of the run's scale (``ersam_lib/recorded/reference_<scale>.json``), within
the tolerance that the reference declares for that metric; it exits 1 when one is out of tolerance or missing.
``--record`` writes such a reference from a finished run, with a default tolerance per kind of metric
(:data:`KINDS`): timings and what is computed from them are printed but not checked (they belong to the machine),
and so is what the search of chapter 5 found and chapter 6 deployed (the machine's latencies steer the search),
accuracies are checked to within 3 points, other real numbers to within 10 %, counts, flags, hashes and settings
exactly. The defaults are guesses from each metric's name and value: review the recorded file (compare a second
run against it) and edit a metric's entry to declare another tolerance, or record with ``--spread-from OLD_REF``:
where an independent run (an older reference, another machine) lies outside a default tolerance, the entry's
tolerance is widened to cover it, and the entry says so (``"spread"``: that run's value and machine); an entry whose
value the old reference holds to the last digit keeps the old spread. CPU training is
bit-exact only on the same instruction set (``cpu_capability`` in the machine record): on another CPU a model
trained from scratch lands a few points away, which is what such a tolerance has to admit.

The reference file::

    {"format": "ersam-reference/1", "scale": "tutorial", "seed": 0,
     "recorded": {"date": ..., "run": "tutorial", "command": "python -m ersam_lib run ...", "machine": {...}},
     "chapters": {"01_data": {"floor_acc": {"value": 0.41, "kind": "accuracy", "abs_tol": 0.03}, ...}, ...}}

An entry is checked as ``|run - value| <= max(abs_tol, rel_tol * |value|)`` when it declares ``abs_tol`` or
``rel_tol``, exactly otherwise, and only printed when it says ``"check": false``; an entry with ``"optional": true``
(one keyed by a searched architecture's id, which another run may not find) is no failure when the run lacks it,
nor is an unchecked one (``finalists.5`` of a run whose front has five finalists).
Nested metrics (dicts, lists) are compared leaf by leaf under dotted names (``baseline_test_acc.tcresnet8``); each
chapter also carries ``run.status`` (exact: ``ok``) and ``run.wall_s`` (a timing).
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .io import ArtifactError, atomic_write_json, read_json
from .rundir import read_summary, summary_path

__all__ = ["Comparison", "KINDS", "REFERENCE_DIR", "Row", "compare_run", "default_reference", "flatten",
           "kind_of", "load_reference", "make_reference", "record_reference", "widen_to"]

FORMAT = "ersam-reference/1"
REFERENCE_DIR = Path(__file__).resolve().parent / "recorded"

# Default tolerance of each kind of metric (a reference file may declare another one per metric).
KINDS: dict[str, dict[str, Any]] = {
    "machine": {"check": False},  # timings and what is computed from them (energies, the cost model's errors and
    #                               fitted exponents, search rewards): they measure the machine, printed only
    "version": {"check": False},  # library versions, threads: facts about the machine, printed only
    "name": {"check": False},  # names that carry a run's architecture id (searched-1-58790d3a1fe9): printed only
    "outcome": {"check": False},  # what the search found and what chapter 6 made of it (the front, the finalists,
    #                               which baselines they dominate, the deployed model's scores): chapter 2's latencies
    #                               of this machine steer the search, so a rerun can find other architectures
    "cache": {"check": False},  # what a run's caches already held (supernet scores computed, not read back): a resumed
    #                             run computes fewer, so printed only
    "accuracy": {"abs_tol": 0.03},  # accuracies, errors, rates and shares in [0, 1]: within 3 points
    "difference": {"abs_tol": 0.05},  # a difference of two accuracies (a teacher's lead, final minus full): each
    #                                   side moves by up to 3 points, so a relative tolerance on a small gap means nothing
    "measure": {"rel_tol": 0.10},  # other real numbers (MAE, sizes, ratios): within 10 %
    "count": {},  # integers (samples, parameters, MACs): exact
    "flag": {},  # booleans (a claim that holds): exact
    "hash": {},  # content hashes: exact
    "text": {},  # other strings and None (configuration, statuses): exact
}
_MACHINE = {"s", "ms", "us", "sec", "seconds", "time", "wall", "latency", "energy", "mj", "mw", "j", "speedup",
            "throughput", "elapsed", "mape", "within10", "spearman", "r2", "exponents", "blowup", "calibration",
            "power", "reward", "hypervolume", "over", "speed", "rtf"}
_OUTCOME_CHAPTERS = ("05", "06")  # the search's results, and the deployment of the model it chose
_OUTCOME = {"dominated", "beats", "front", "finalist", "budget", "drop", "frontend", "rttm", "meter", "size", "peak",
            "ratio", "role"}
_MACHINE_CHAPTERS = ("02",)  # chapter 2 measures the machine: every real number it records is a timing or from one
_ACCURACY = {"acc", "accuracy", "error", "err", "rate", "share", "fraction", "f1", "precision", "recall",
             "agreement", "top1", "chance"}
_DIFFERENCE = {"gap", "minus", "lead"}
_VERSION = {"torch", "torchaudio", "numpy", "python", "platform", "papermill", "executorch", "onnxruntime",
            "version", "cpus", "threads"}
_HEX = re.compile(r"^[0-9a-f]{16,}$")
_RUN_ID = re.compile(r"-[0-9a-f]{8,}(?![0-9a-z])")  # a searched architecture's id inside a name (even before _int8)
_VERSION_TEXT = re.compile(r"^\d+\.\d+(\.\d+)?([.+-]\S*)?$")


@dataclass(frozen=True)
class Row:
    """One metric of one chapter: the run's value, the reference entry and the verdict."""

    chapter: str
    metric: str
    value: Any
    reference: dict[str, Any] | None
    verdict: str  # "ok" | "OUT" | "missing" (in the reference, not in the run) | "absent" (an optional one)
    #               | "new" (in the run, not in the reference) | "info" (not checked)

    @property
    def failed(self) -> bool:
        return self.verdict in ("OUT", "missing")

    def line(self) -> str:
        ref = self.reference or {}
        tol = ("not checked" if ref.get("check") is False else
               " ".join(f"{k}={ref[k]:g}" for k in ("abs_tol", "rel_tol") if k in ref) or "exact")
        shown = "-" if self.verdict in ("missing", "absent") else _show(self.value)
        return (f"{self.verdict:>7}  {self.chapter:<14} {self.metric:<44} {shown:>14}  "
                f"ref {_show(ref.get('value', '-')) if ref else '-':>14}  {tol if ref else ''}").rstrip()


@dataclass(frozen=True)
class Comparison:
    """Every metric of a run against a reference."""

    run_dir: str
    reference: str
    rows: tuple[Row, ...]
    cpus: tuple[str | None, str | None] = (None, None)  # the reference's and the run's ``cpu_capability``

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.failed]

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        """The table the CLI prints, then one line with the verdict."""
        checked = [r for r in self.rows if r.verdict in ("ok", "OUT", "missing")]
        lines = [r.line() for r in self.rows]
        verdict = (f"{len(checked) - len(self.failures)} of {len(checked)} checked metrics within tolerance"
                   + (f"; {len(self.failures)} NOT: " + ", ".join(f"{r.chapter}/{r.metric}" for r in
                                                                 self.failures[:8]) if self.failures else ""))
        ref_cpu, run_cpu = self.cpus
        if ref_cpu != run_cpu:  # trained numbers can only be bit-exact on the same instruction set
            lines.append(f"[ersam] compare: the reference's CPU ran {ref_cpu or 'an unrecorded instruction set'}, "
                         f"this run's {run_cpu or 'an unrecorded one'}: trained models differ by training noise")
        return "\n".join(lines + [f"[ersam] compare {self.run_dir} with {self.reference}: {verdict}"])


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


def kind_of(name: str, value: Any, chapter: str = "") -> str:
    """The kind of a metric (a key of :data:`KINDS`) from its dotted name, its value and its chapter."""
    tokens = set(re.split(r"[._\-]", name.lower()))
    outcome = chapter[:2] in _OUTCOME_CHAPTERS and bool(tokens & _OUTCOME)
    if isinstance(value, str):
        if _HEX.match(value) or tokens & {"sha256", "sha", "hash", "key"}:
            return "hash"
        if _RUN_ID.search(value):
            return "name"
        if outcome:
            return "outcome"
        return "version" if tokens & _VERSION or _VERSION_TEXT.match(value) else "text"
    if outcome:
        return "outcome"
    if isinstance(value, bool):
        return "flag"
    if tokens & _MACHINE or (isinstance(value, float) and chapter[:2] in _MACHINE_CHAPTERS):
        return "machine"
    if isinstance(value, int) and tokens & _VERSION:
        return "version"
    if isinstance(value, int) and "cache" in tokens:
        return "cache"
    if isinstance(value, int) and tokens & {"selective", "gated"}:
        return "measure"  # what a gate let through follows the students' training: a count, but not an exact one
    if isinstance(value, int):
        return "count"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "text"  # nan or inf: compared exactly (as what they are)
        if tokens & {"mae", "loss"}:
            return "measure"
        if tokens & _DIFFERENCE and -1.0 <= value <= 1.0:
            return "difference"
        return "accuracy" if tokens & _ACCURACY and 0.0 <= value <= 1.0 else "measure"
    return "text"


def _chapter_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {"run.status": entry.get("status"), "run.wall_s": entry.get("wall_s")} | flatten(entry.get("metrics", {}))


def make_reference(run_dir: str | os.PathLike, command: str | None = None,
                   spread_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reference from a finished run: every metric with the default tolerance of its kind, widened where an
    independent run's reference ``spread_from`` lies outside it (:func:`widen_to`)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    bad = {name: e.get("status") for name, e in summary["chapters"].items() if e.get("status") != "ok"}
    if bad:
        raise ValueError(f"{summary_path(run_dir)}: chapters {bad} are not 'ok'; record a reference from a "
                         f"complete run")
    chapters = {}
    for name, entry in summary["chapters"].items():
        chapters[name] = {metric: _entry(name, metric, value) for metric, value in _chapter_metrics(entry).items()}
    if spread_from is not None:
        widen_to(chapters, spread_from)
    params = [arg for k, v in summary.get("parameters", {}).items() for arg in ("-p", str(k), str(v))]
    default_cmd = shlex.join(["python", "-m", "ersam_lib", "run", "--scale", str(summary["scale"]), "--seed",
                              str(summary["seed"]), "--run-dir", f"runs/{run_dir.resolve().name}", *params])
    return {
        "format": FORMAT, "scale": summary["scale"], "seed": summary["seed"],
        "recorded": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "run": run_dir.resolve().name, "run_created": summary.get("created"),
                     "run_updated": summary.get("updated"), "command": command or default_cmd,
                     "machine": summary.get("environment", {})},
        "chapters": chapters,
    }


def _entry(chapter: str, metric: str, value: Any) -> dict[str, Any]:
    kind = kind_of(metric, value, chapter)
    entry = {"value": value, "kind": kind} | KINDS[kind]
    if _RUN_ID.search(metric):  # keyed by a searched architecture's id: another run may have found others
        entry["optional"] = True
    return entry


def widen_to(chapters: dict[str, dict[str, Any]], other: dict[str, Any]) -> list[str]:
    """Widen each checked, tolerant entry of ``chapters`` whose value in the reference ``other`` (an independent
    run) lies outside its tolerance, just enough to admit it (rounded up: a point for ``abs_tol``, 1 % for
    ``rel_tol``); the entry keeps that run's value and machine under ``"spread"``. An entry whose value ``other``
    holds to the last digit with a spread of its own keeps that spread: the same computation reproduced (a metric
    that the change between the two runs did not touch) keeps what earlier runs measured around it. Returns the
    widened names."""
    widened, machine = [], other.get("recorded", {}).get("machine", {})
    source = {"date": other.get("recorded", {}).get("date"),
              "cpu": machine.get("cpu_capability", "not recorded"), "platform": machine.get("platform")}
    for chapter, metrics in chapters.items():
        for metric, entry in metrics.items():
            theirs = other.get("chapters", {}).get(chapter, {}).get(metric)
            if entry.get("check") is False or theirs is None:
                continue
            if "spread" in theirs and theirs["value"] == entry["value"] and theirs.get("kind") == entry.get("kind"):
                entry.update({k: theirs[k] for k in ("abs_tol", "rel_tol", "spread") if k in theirs})
                widened.append(f"{chapter}/{metric}")
                continue
            if _within(theirs["value"], entry):
                continue
            if not ("abs_tol" in entry or "rel_tol" in entry) or not (_real(theirs["value"])
                                                                      and math.isfinite(theirs["value"])):
                continue  # an exact entry that differs is a real difference, not spread
            gap = abs(theirs["value"] - entry["value"])
            if "abs_tol" in entry:
                entry["abs_tol"] = math.ceil(gap * 100 + 1e-9) / 100
            else:
                entry["rel_tol"] = math.ceil(gap / max(abs(entry["value"]), 1e-12) * 100 + 1e-9) / 100
            entry["spread"] = {"value": theirs["value"]} | source
            widened.append(f"{chapter}/{metric}")
    return widened


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_reference(run_dir: str | os.PathLike, path: str | os.PathLike | None = None,
                     command: str | None = None, spread_from: str | os.PathLike | None = None) -> Path:
    """Write :func:`make_reference` of ``run_dir`` to ``path`` (default: the committed one of the run's scale),
    its tolerances widened to admit the reference file ``spread_from`` where given."""
    ref = make_reference(run_dir, command, load_reference(spread_from) if spread_from is not None else None)
    target = Path(path) if path is not None else default_reference(ref["scale"])
    return atomic_write_json(target, ref)


def default_reference(scale: str) -> Path:
    """The committed reference of a scale: ``ersam_lib/recorded/reference_<scale>.json``."""
    return REFERENCE_DIR / f"reference_{scale}.json"


def load_reference(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a reference file; a malformed one is an :class:`ArtifactError` naming it."""
    ref = read_json(path)
    if not isinstance(ref, dict) or ref.get("format") != FORMAT or not isinstance(ref.get("chapters"), dict):
        raise ArtifactError(f"{path} is not a reference file (want format {FORMAT!r} with 'chapters')")
    for chapter, metrics in ref["chapters"].items():
        for metric, entry in metrics.items():
            if not isinstance(entry, dict) or "value" not in entry:
                raise ArtifactError(f"{path}: {chapter}/{metric} has no 'value'")
            for key in ("abs_tol", "rel_tol"):
                if key in entry and not (isinstance(entry[key], int | float) and entry[key] >= 0):
                    raise ArtifactError(f"{path}: {chapter}/{metric} has {key}={entry[key]!r}, want a number >= 0")
    return ref


def compare_run(run_dir: str | os.PathLike, reference: str | os.PathLike | None = None) -> Comparison:
    """Every reference metric against the run's; the run's metrics the reference lacks are listed as ``new``."""
    summary = read_summary(run_dir)
    path = Path(reference) if reference is not None else default_reference(summary["scale"])
    if not path.exists():
        raise FileNotFoundError(f"no reference {path} for SCALE={summary['scale']}: record one from a complete run "
                                f"with python -m ersam_lib compare RUN_DIR --record")
    ref = load_reference(path)
    if (ref.get("scale"), ref.get("seed")) != (summary["scale"], summary["seed"]):
        raise ValueError(f"{path} holds SCALE={ref.get('scale')}, SEED={ref.get('seed')}; the run "
                         f"{run_dir} is SCALE={summary['scale']}, SEED={summary['seed']}")
    rows = []
    for chapter in sorted(set(ref["chapters"]) | set(summary["chapters"])):
        expected = ref["chapters"].get(chapter, {})
        entry = summary["chapters"].get(chapter)
        got = _chapter_metrics(entry) if entry is not None else {}
        for metric in sorted(set(expected) | set(got)):
            rows.append(_row(chapter, metric, got, expected.get(metric)))
    cpus = (ref.get("recorded", {}).get("machine", {}).get("cpu_capability"),
            summary.get("environment", {}).get("cpu_capability"))
    return Comparison(str(run_dir), str(path), tuple(rows), cpus)


def _row(chapter: str, metric: str, got: dict[str, Any], entry: dict[str, Any] | None) -> Row:
    if entry is None:
        return Row(chapter, metric, got[metric], None, "new")
    if metric not in got:
        # an unchecked one (a search outcome: chapter 5 may find fewer finalists) is no failure either
        return Row(chapter, metric, None, entry,
                   "absent" if entry.get("optional") or entry.get("check") is False else "missing")
    value = got[metric]
    if entry.get("check") is False:
        return Row(chapter, metric, value, entry, "info")
    return Row(chapter, metric, value, entry, "ok" if _within(value, entry) else "OUT")


def _within(value: Any, entry: dict[str, Any]) -> bool:
    ref = entry["value"]
    tolerant = "abs_tol" in entry or "rel_tol" in entry
    numbers = _real(value) and _real(ref)
    if not (tolerant and numbers):
        return value == ref or (isinstance(value, float) and isinstance(ref, float) and math.isnan(value)
                                and math.isnan(ref))
    return abs(value - ref) <= max(entry.get("abs_tol", 0.0), entry.get("rel_tol", 0.0) * abs(ref))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 14 else text[:11] + "..."
