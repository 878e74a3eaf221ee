"""A run against reference metrics (the reviewer's check; the runner prints it at the end of a full run).

``python -m ersam_lib compare RUN_DIR`` reads the metrics every chapter recorded in ``RUN_DIR/summary.json`` and sets
each one beside the committed reference of the run's scale (``ersam_lib/recorded/reference_<scale>.json``); it exits
1 when one is out of tolerance, missing, or declared by no stage. How a metric is checked is not the reference's to
say: its stage in :mod:`ersam_lib.core.stages` declares its kind, and :data:`ersam_lib.core.stages.KINDS` gives the
kind's tolerance: timings and what is computed from them are printed but not checked (they belong to the machine), and
so is what the search of chapter 5 found and chapter 6 deployed (the machine's latencies steer the search), accuracies
are checked to within 3 points, other real numbers to within 10 %, counts, flags, hashes and settings exactly.

``--record`` writes a reference from a finished run: each metric's value. With ``--spread-from OLD_REF``, where an
independent run (an older reference, another machine) lies outside a default tolerance, the entry records that run's
value, machine and the tolerance that admits it (``"spread"``), which compare then uses; an entry whose value the old
reference holds to the last digit keeps the old spread. CPU training is bit-exact only on the same instruction set
(``cpu_capability`` in the machine record): on another CPU a model trained from scratch lands a few points away,
which is what such a spread has to admit.

The reference file::

    {"format": "ersam-reference/2", "scale": "tutorial", "seed": 0,
     "recorded": {"date": ..., "run": "tutorial", "command": "python -m ersam_lib run ...", "machine": {...}},
     "chapters": {"01_data": {"floor_acc_test": {"value": 0.41}, "n_train": {"value": 6000},
                              "agreement_fill": {"value": 0.93, "spread": {"value": 0.9, "abs_tol": 0.04, ...}},
                              ...}, ...}}

A metric keyed by a searched architecture's id (which another run may not find), or one that is not checked
(``finalists.5`` of a run whose front has five finalists), is no failure when the run lacks it. Nested metrics (dicts,
lists) are compared leaf by leaf under dotted names (``baseline_test_acc.tcresnet8``); each chapter also carries
``run.status`` (exact: ``ok``) and ``run.wall_s`` (a timing).
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.io import ArtifactError, atomic_write_json, read_json
from ..core.rundir import read_summary, summary_path
from ..core.stages import KINDS, STAGES, Stage, find_stage, flatten

__all__ = ["Comparison", "REFERENCE_DIR", "Row", "check_of", "compare_run", "default_reference", "load_reference",
           "make_reference", "record_reference", "time_table", "widen_to"]

FORMAT = "ersam-reference/2"
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "recorded"
_RUN_ID = re.compile(r"-[0-9a-f]{8,}(?![0-9a-z])")  # a searched architecture's id inside a name (even before _int8)


def check_of(chapter: str, metric: str, value: Any, stages: Iterable[Stage] = STAGES) -> dict[str, Any] | None:
    """How ``metric`` of ``chapter`` (a notebook stem) is checked: ``{"kind": ...}`` with the kind's tolerance from
    :data:`ersam_lib.core.stages.KINDS` (``"check": False`` when printed only), or ``None`` when its stage does not
    declare it. Two rules look at the value: a name that carries a searched architecture's id is printed only, and
    a non-finite number is compared exactly (as what it is)."""
    found = find_stage(chapter, stages)
    declared = found.metric(metric) if found is not None else None
    if declared is None:
        return None
    kind = declared.kind
    if kind == "name" and isinstance(value, str) and _RUN_ID.search(value):
        return {"kind": kind, "check": False}
    if isinstance(value, float) and not math.isfinite(value) and KINDS[kind].get("check", True):
        return {"kind": kind}
    return {"kind": kind} | KINDS[kind]


def _tolerance(check: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
    """The check of a metric, its tolerance widened where the reference entry records an independent run's spread."""
    spread = (entry or {}).get("spread", {})
    return check | {k: spread[k] for k in ("abs_tol", "rel_tol") if k in spread and check.get("check", True)}


@dataclass(frozen=True)
class Row:
    """One metric of one chapter: the run's value, the reference entry and the verdict."""

    chapter: str
    metric: str
    value: Any
    reference: dict[str, Any] | None
    verdict: str  # "ok" | "OUT" | "missing" (in the reference, not in the run) | "absent" (an optional one)
    #               | "new" (in the run, not in the reference) | "info" (not checked)
    #               | "undeclared" (its stage in ersam_lib/core/stages.py does not declare it)
    check: dict[str, Any] | None = None  # the kind and tolerance it was checked with (check_of, widened)

    @property
    def failed(self) -> bool:
        return self.verdict in ("OUT", "missing", "undeclared")

    def line(self) -> str:
        ref, check = self.reference or {}, self.check or {}
        tol = ("undeclared" if self.check is None else "not checked" if check.get("check") is False else
               " ".join(f"{k}={check[k]:g}" for k in ("abs_tol", "rel_tol") if k in check) or "exact")
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


def _chapter_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {"run.status": entry.get("status"), "run.wall_s": entry.get("wall_s")} | flatten(entry.get("metrics", {}))


def make_reference(run_dir: str | os.PathLike, command: str | None = None,
                   spread_from: dict[str, Any] | None = None, stages: Iterable[Stage] = STAGES) -> dict[str, Any]:
    """A reference from a finished run: every metric's value (how each is checked is the registry's, not the
    file's), with the spread of an independent run's reference ``spread_from`` where it lies outside the default
    tolerance (:func:`widen_to`). A metric its stage does not declare is an error."""
    run_dir, stages = Path(run_dir), tuple(stages)
    summary = read_summary(run_dir)
    bad = {name: e.get("status") for name, e in summary["chapters"].items() if e.get("status") != "ok"}
    if bad:
        raise ValueError(f"{summary_path(run_dir)}: chapters {bad} are not 'ok'; record a reference from a "
                         f"complete run")
    chapters = {name: {metric: {"value": value} for metric, value in _chapter_metrics(entry).items()}
                for name, entry in summary["chapters"].items()}
    undeclared = [f"{c}/{m}" for c, metrics in chapters.items() for m, e in metrics.items()
                  if check_of(c, m, e["value"], stages) is None]
    if undeclared:
        raise ValueError(f"{len(undeclared)} metric(s) no stage declares: {', '.join(undeclared[:8])}; declare them "
                         f"in ersam_lib/core/stages.py")
    if spread_from is not None:
        widen_to(chapters, spread_from, stages)
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


def widen_to(chapters: dict[str, dict[str, Any]], other: dict[str, Any],
             stages: Iterable[Stage] = STAGES) -> list[str]:
    """Record, on each checked, tolerant entry of ``chapters`` whose value in the reference ``other`` (an
    independent run) lies outside the default tolerance, that run's value, machine and the tolerance that admits it
    (rounded up: a point for ``abs_tol``, 1 % for ``rel_tol``) under ``"spread"``. An entry whose value ``other``
    holds to the last digit with a spread of its own keeps that spread: the same computation reproduced (a metric
    that the change between the two runs did not touch) keeps what earlier runs measured around it. Returns the
    widened names."""
    widened, machine, stages = [], other.get("recorded", {}).get("machine", {}), tuple(stages)
    source = {"date": other.get("recorded", {}).get("date"),
              "cpu": machine.get("cpu_capability", "not recorded"), "platform": machine.get("platform")}
    for chapter, metrics in chapters.items():
        for metric, entry in metrics.items():
            theirs = other.get("chapters", {}).get(chapter, {}).get(metric)
            check = check_of(chapter, metric, entry["value"], stages)
            if theirs is None or check is None or check.get("check") is False:
                continue
            if "spread" in theirs and theirs["value"] == entry["value"]:
                entry["spread"] = dict(theirs["spread"])
                widened.append(f"{chapter}/{metric}")
                continue
            if _within(theirs["value"], entry["value"], check):
                continue
            if not ("abs_tol" in check or "rel_tol" in check) or not (_real(theirs["value"])
                                                                      and math.isfinite(theirs["value"])):
                continue  # an exact entry that differs is a real difference, not spread
            gap = abs(theirs["value"] - entry["value"])
            tol = ({"abs_tol": math.ceil(gap * 100 + 1e-9) / 100} if "abs_tol" in check else
                   {"rel_tol": math.ceil(gap / max(abs(entry["value"]), 1e-12) * 100 + 1e-9) / 100})
            entry["spread"] = {"value": theirs["value"]} | tol | source
            widened.append(f"{chapter}/{metric}")
    return widened


def record_reference(run_dir: str | os.PathLike, path: str | os.PathLike | None = None,
                     command: str | None = None, spread_from: str | os.PathLike | None = None,
                     stages: Iterable[Stage] = STAGES) -> Path:
    """Write :func:`make_reference` of ``run_dir`` to ``path`` (default: the committed one of the run's scale),
    with the spread of the reference file ``spread_from`` where given."""
    ref = make_reference(run_dir, command, load_reference(spread_from) if spread_from is not None else None, stages)
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
            spread = entry.get("spread", {})
            for key in ("abs_tol", "rel_tol"):
                if key in spread and not (isinstance(spread[key], int | float) and spread[key] >= 0):
                    raise ArtifactError(f"{path}: {chapter}/{metric} has a spread {key}={spread[key]!r}, want a "
                                        f"number >= 0")
    return ref


def compare_run(run_dir: str | os.PathLike, reference: str | os.PathLike | None = None,
                stages: Iterable[Stage] = STAGES) -> Comparison:
    """Every reference metric against the run's, checked as the registry declares it (:func:`check_of`); the run's
    metrics the reference lacks are listed as ``new``, and a metric no stage declares fails."""
    stages = tuple(stages)
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
            rows.append(_row(chapter, metric, got, expected.get(metric), stages))
    cpus = (ref.get("recorded", {}).get("machine", {}).get("cpu_capability"),
            summary.get("environment", {}).get("cpu_capability"))
    return Comparison(str(run_dir), str(path), tuple(rows), cpus)


def _row(chapter: str, metric: str, got: dict[str, Any], entry: dict[str, Any] | None,
         stages: tuple[Stage, ...]) -> Row:
    value = got.get(metric, (entry or {}).get("value"))
    check = check_of(chapter, metric, value, stages)
    if check is None:
        return Row(chapter, metric, got.get(metric), entry, "undeclared")
    check = _tolerance(check, entry)
    if entry is None:
        return Row(chapter, metric, got[metric], None, "new", check)
    if metric not in got:
        # keyed by a searched architecture's id (another run may find others), or unchecked (a search outcome:
        # chapter 5 may find fewer finalists): no failure
        optional = bool(_RUN_ID.search(metric)) or check.get("check") is False
        return Row(chapter, metric, None, entry, "absent" if optional else "missing", check)
    if check.get("check") is False:
        return Row(chapter, metric, value, entry, "info", check)
    return Row(chapter, metric, value, entry, "ok" if _within(value, entry["value"], check) else "OUT", check)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _within(value: Any, ref: Any, check: dict[str, Any]) -> bool:
    tolerant = "abs_tol" in check or "rel_tol" in check
    if not (tolerant and _real(value) and _real(ref)):
        return value == ref or (isinstance(value, float) and isinstance(ref, float) and math.isnan(value)
                                and math.isnan(ref))
    return abs(value - ref) <= max(check.get("abs_tol", 0.0), check.get("rel_tol", 0.0) * abs(ref))


def time_table(ref: dict[str, Any], stages: Iterable[Stage] = STAGES) -> str:
    """The chapters' wall times of a reference's run as a Markdown table, with the run's date, machine and command:
    the one time table the README quotes (a test keeps the two equal; ``compare --times`` prints it)."""
    stages = {s.notebook: s for s in stages}
    rows, total = [], 0.0
    for chapter, metrics in ref["chapters"].items():
        wall = float(metrics["run.wall_s"]["value"])
        total += wall
        title = stages[chapter].title if chapter in stages else chapter
        rows.append(f"| {chapter[:2]} | {title} | {wall / 60:.1f} min |")
    rec, machine = ref.get("recorded", {}), ref.get("recorded", {}).get("machine", {})
    return "\n".join([
        "| chapter | what it does | wall time |", "|---|---|---:|", *rows, f"| | all chapters | {total / 60:.1f} min |",
        "", f"Recorded {str(rec.get('date', '?'))[:10]} from the run of the committed `reference_{ref['scale']}.json` "
            f"(`{rec.get('command', '?')}`) on a {machine.get('cpus', '?')}-core {machine.get('cpu', '?')} "
            f"({machine.get('cpu_capability', '?')} kernels), torch {machine.get('torch', '?')}."])


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 14 else text[:11] + "..."
