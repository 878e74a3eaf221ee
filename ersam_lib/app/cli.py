"""Command line: ``python -m ersam_lib run|book|compare|students|train|count|evaluate-rttm`` (also ``ersam``).

- ``run``: execute the chapter notebooks with papermill (:mod:`ersam_lib.app.runner`; chapter 0); after a run of every
  chapter it prints the comparison with the reference metrics of its scale (print only);
- ``book``: render the executed notebooks of a run (:mod:`ersam_lib.app.book`; chapter 0);
- ``compare``: a run's metrics against a reference, exit 1 when one is out of tolerance; ``--record`` writes a
  reference from a run (:mod:`ersam_lib.app.compare`);
- ``students``: the student copies of the chapters, without solutions (:mod:`ersam_lib.app.students`);
- ``train``: train one supernet variant of chapter 4's ablation from a ``RUN_DIR``
  (:func:`ersam_lib.experiments.ablation.train_variant`); it works as is under ``torchrun``::

      torchrun --nproc_per_node 2 -m ersam_lib train --run-dir runs/tutorial --scale tutorial --mode selective

- ``count``: the streaming social-ambiance meter; ``evaluate-rttm``: the meter scored on annotated recordings
  (chapter 6).

Bad input gets one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..core.arguments import fraction, non_negative_int, positive_float, positive_int
from ..core.io import ArtifactError
from ..core.rundir import check_run_dir, rebuilt_chapter, summary_path
from ..core.scales import SCALES
from .runner import (DEFAULT_NOTEBOOKS, NotebookFailed, RunInterrupted, discover_notebooks, parse_parameter,
                     run_pipeline, select_notebooks)

__all__ = ["build_parser", "main", "train"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the usage block first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ersam", description="Run and render the ERSAM book.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the chapter notebooks with papermill")
    run.add_argument("--scale", choices=SCALES, default="tutorial")
    run.add_argument("--run-dir", required=True, help="folder for all results of this run")
    run.add_argument("--seed", type=non_negative_int, default=0)
    run.add_argument("--notebooks", default=str(DEFAULT_NOTEBOOKS), help="folder of NN_*.ipynb chapters")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--only", help="run one chapter (e.g. 02), reusing earlier chapters' files in RUN_DIR")
    group.add_argument("--from", dest="from_", help="resume at a chapter (e.g. 03)")
    run.add_argument("--timeout", type=positive_float, default=3600.0, help="wall-clock limit per notebook, seconds")
    run.add_argument("--cell-timeout", type=positive_float, default=None,
                     help="limit per cell, seconds, rounded up to whole seconds (default: --timeout)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a chapter parameter, as papermill's -p (e.g. -p SOURCE librispeech -p ROOT DIR); it goes "
                          "to the chapters that declare it")
    run.add_argument("--reference", default=None,
                     help="reference metrics printed against the run's at the end of a run of every chapter "
                          "(default: ersam_lib/recorded/reference_<scale>.json when it exists)")
    book = sub.add_parser("book", help="render the executed notebooks of a run as a Jupyter Book")
    book.add_argument("--run-dir", required=True)
    book.add_argument("--out", default=None, help="folder for _build/html (default: book/, the reader's copy)")
    compare = sub.add_parser("compare", help="a run's recorded metrics against reference metrics")
    compare.add_argument("run_dir", nargs="?", help="RUN_DIR of the run (its summary.json)")
    compare.add_argument("--reference", default=None,
                         help="reference file (default: ersam_lib/recorded/reference_<scale>.json)")
    compare.add_argument("--record", action="store_true",
                         help="write the reference from this run instead (each metric's value; how it is checked is "
                              "its stage's declaration in ersam_lib/core/stages.py)")
    compare.add_argument("--command", dest="record_command", default=None,
                         help="with --record: the command that made the run, as recorded")
    compare.add_argument("--times", action="store_true",
                         help="print the chapters' wall times of the reference's run as the README quotes them "
                              "(default reference: the tutorial scale's)")
    compare.add_argument("--spread-from", default=None,
                         help="with --record: an independent run's reference file; where its value lies outside a "
                              "default tolerance, the entry records that run's spread, which widens the tolerance")
    students = sub.add_parser("students", help="write the student copies of the chapters (no solutions)")
    students.add_argument("out_dir", nargs="?", default=None, help="folder (default: notebooks/student)")
    students.add_argument("--check", action="store_true", help="write nothing; exit 1 if the copies are out of sync")
    _add_train_parser(sub)
    _add_meter_parsers(sub)
    return parser


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one supernet variant of chapter 4 (works under torchrun)")
    p.add_argument("--run-dir", required=True, help="RUN_DIR with chapter 1's features (and chapter 3's teacher)")
    p.add_argument("--scale", choices=SCALES, default="tutorial")
    p.add_argument("--mode", default="selective", choices=["none", "full", "selective"])
    p.add_argument("--tau", type=fraction, default=0.5)
    p.add_argument("--uncertainty", default="entropy", choices=["entropy", "margin"])
    p.add_argument("--gate-on", default="student", choices=["student", "largest"],
                   help="whose uncertainty opens the gate: each trained subnet, or the largest for all")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--name", default=None, help="sub-folder of RUN_DIR/supernet/runs (default: from mode and tau)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="auto", help="'auto' (the GPU when there is one), 'cpu', 'cuda' or 'cuda:N'")


def train(args: argparse.Namespace) -> int:
    """``ersam train``: one variant from a RUN_DIR; under ``torchrun --nproc_per_node N`` every rank trains."""
    import torch

    from ..core.repro import pick_device
    from ..experiments.ablation import train_variant
    from ..training.distill import DistillConfig
    from ..training.train import TrainConfig, dist_info, init_distributed

    pick_device(args.device)  # a device this machine lacks: one line before any work
    init_distributed()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    dcfg = DistillConfig(mode=args.mode, tau=args.tau, kind=args.uncertainty, gate_on=args.gate_on)
    overrides = {"seed": args.seed} | ({"epochs": args.epochs} if args.epochs is not None else {})
    cfg = TrainConfig.for_scale(args.scale, distill=dcfg, **overrides)
    row = train_variant(args.run_dir, args.scale, cfg, name=args.name, device=args.device)
    if dist_info()[0] == 0:
        print({k: v for k, v in row.items() if not isinstance(v, dict)})
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _add_meter_parsers(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="counter program with its .json card beside it: a deployed .pte/.onnx "
                       "(RUN_DIR/deploy/, chapter 6) or a .pt2 bundle (ersam_lib.experiments.meter.save_counter)")
        p.add_argument("--hop", type=float, default=5.0, help="seconds between window starts (default 5)")
        p.add_argument("--thresholds", default="1,2,4", help="lowest count of low,moderate,active (default 1,2,4)")
        p.add_argument("--no-normalize", action="store_true", help="skip the per-window level normalisation")

    count = sub.add_parser("count", help="the streaming social-ambiance meter: per-window counts and levels")
    count.add_argument("audio", help="wav/flac/ogg file, or - for standard input")
    common(count)
    count.add_argument("--tail", choices=["align", "drop"], default="align",
                       help="align: a last window ending at the end of the recording; drop: leave the rest out")
    count.add_argument("--format", choices=["csv", "json"], default="csv", help="what is printed (default csv)")
    count.add_argument("--out", help="write the table here instead (.csv or .json)")
    count.add_argument("--plot", help="also write a timeline plot (.png, .pdf, .svg)")
    ev = sub.add_parser("evaluate-rttm", help="score the meter on recordings with same-stem RTTM speaker turns")
    ev.add_argument("audio_dir", help="folder of wav/flac/ogg recordings with <stem>.rttm beside them")
    common(ev)
    ev.add_argument("--rttm-dir", help="folder of the .rttm files (default: AUDIO_DIR)")
    ev.add_argument("--out", help="write the report here (.json)")
    ev.add_argument("--windows-out", help="write the per-window truths and predictions here (.csv)")


def _run_meter(args: argparse.Namespace) -> int:
    """``count`` and ``evaluate-rttm``; every bad input is one line on stderr and exit code 2."""
    from data_prep.rttm import RttmError

    from ..experiments.meter import MeterError

    try:
        return _count(args) if args.command == "count" else _evaluate_rttm(args)
    except (MeterError, RttmError, OSError) as exc:
        print(f"[ersam] error: {exc}", file=sys.stderr)
        return 2


def _meter_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """The meter's settings and the model, from the options shared by count and evaluate-rttm."""
    from ..experiments.meter import MeterConfig, MeterError, load_counter  # imported here: run/book start without torch

    try:
        thresholds = tuple(int(v) for v in args.thresholds.split(","))
    except ValueError:
        raise MeterError(f"--thresholds must be three whole counts like 1,2,4, got {args.thresholds!r}") from None
    cfg = MeterConfig(hop_s=args.hop, thresholds=thresholds, normalize=not args.no_normalize,
                      **({"tail": args.tail} if hasattr(args, "tail") else {}))
    if args.model is None:
        raise MeterError("no model given: pass --model PATH (RUN_DIR/deploy/<name>.pte, or a .pt2 counter bundle)")
    return cfg, load_counter(args.model)


def _count(args: argparse.Namespace) -> int:
    from ..experiments.meter import (count, format_windows, output_format, plot_format, plot_timeline, summary_line,
                                     write_windows)

    if args.out:
        output_format(args.out)  # refuse a bad name before the work, not after
    if args.plot:
        plot_format(args.plot)
    cfg, counter = _meter_setup(args)
    df = count(args.audio, counter, cfg)
    if args.out:
        write_windows(df, args.out)
    else:
        sys.stdout.write(format_windows(df, args.format))
    if args.plot:
        plot_timeline(df, args.plot)
    for warning in df.attrs["warnings"]:
        print(f"[ersam] warning: {warning}", file=sys.stderr)
    print(f"[ersam] count: {summary_line(df)}", file=sys.stderr)
    return 0


def _evaluate_rttm(args: argparse.Namespace) -> int:
    from ..core.io import atomic_path, atomic_write_json
    from ..experiments.meter import MeterError
    from ..experiments.rttm_eval import evaluate_rttm

    for option, path, suffix in (("--out", args.out, ".json"), ("--windows-out", args.windows_out, ".csv")):
        if path and Path(path).suffix.lower() != suffix:  # refuse a bad name before the work, not after
            raise MeterError(f"{option} writes {suffix[1:].upper()}: give it a {suffix} name, got {path}")
    cfg, counter = _meter_setup(args)
    report = evaluate_rttm(args.audio_dir, counter, cfg, rttm_dir=args.rttm_dir)
    print(report.summary())
    if args.out:
        atomic_write_json(args.out, report.to_dict())
    if args.windows_out:
        with atomic_path(args.windows_out) as tmp:
            report.windows.to_csv(tmp, index=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("count", "evaluate-rttm"):
        return _run_meter(args)
    try:
        if args.command == "compare":
            return _compare(args)
        if args.command == "students":
            return _students(args)
        if args.command != "book":
            check_run_dir(args.run_dir, create=False)  # `run` creates it once its parameters are valid
        if args.command == "run":
            return _run(args)
        if args.command == "train":
            return train(args)
        return _book(args)
    except (ArtifactError, ValueError, OSError) as exc:  # bad input or a damaged file: one line, no traceback
        print(f"[ersam] error: {exc}", file=sys.stderr)
        return 2


def _book(args: argparse.Namespace) -> int:
    """``ersam book``: render a run; a failed or interrupted render leaves the previous book as it was."""
    import subprocess

    from .book import build_book

    try:
        print(f"[ersam] book: {build_book(args.run_dir, out_dir=args.out)}")
    except RuntimeError as exc:  # a chapter that is not a complete "ok" execution
        print(f"[ersam] error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"[ersam] error: jupyter-book failed (exit {exc.returncode}; its messages are above); the previous "
              f"render, if any, is unchanged", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[ersam] book: interrupted; nothing half-rendered is left and the previous render, if any, is "
              "unchanged", file=sys.stderr)
        return 130
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        summary = run_pipeline(
            args.run_dir, args.scale, args.seed, args.notebooks, args.only, args.from_,
            args.timeout, args.cell_timeout, {name: parse_parameter(v) for name, v in args.parameter},
        )
    except RunInterrupted as exc:
        print(f"[ersam] {exc}", file=sys.stderr)
        return 128 + exc.signum
    except NotebookFailed as exc:
        print(f"[ersam] FAILED: {exc}", file=sys.stderr)
        print(f"[ersam] {_resume_command(args, exc)}", file=sys.stderr)
        return 1
    ran = [nb.stem for nb in select_notebooks(discover_notebooks(args.notebooks), args.only, args.from_)]
    total = sum(summary["chapters"][c]["wall_s"] for c in ran)
    print(f"[ersam] done: {len(ran)} chapter{'s' * (len(ran) != 1)} ({', '.join(c[:2] for c in ran)}), {total:.0f} s; "
          f"summary in {summary_path(args.run_dir)}")
    if args.only is None:
        _compare_after_run(args.run_dir, args.reference)
    return 0


def _resume_command(args: argparse.Namespace, exc: NotebookFailed) -> str:
    """The command that resumes a failed run at its failed chapter (a timed-out one with twice the time), or at the
    earlier chapter whose damaged or stale file stopped it (its error names the chapter that rebuilds the file);
    shell-quoted, so that it can be pasted whatever the paths and values hold."""
    extra = [] if args.notebooks == str(DEFAULT_NOTEBOOKS) else ["--notebooks", args.notebooks]
    for name, value in args.parameter:
        extra += ["-p", name, value]
    if exc.result.status == "timeout":
        extra += ["--timeout", f"{2 * args.timeout:.0f}"]
    failed = exc.notebook[:2]
    upstream = rebuilt_chapter(str((exc.result.error or {}).get("message", "")))
    start = min(failed, upstream) if upstream else failed
    where = "at this chapter" if start == failed else f"at chapter {start}, which rebuilds the file it names"
    command = shlex.join(["python", "-m", "ersam_lib", "run", "--scale", args.scale, "--seed", str(args.seed),
                          "--run-dir", args.run_dir, *extra, "--from", start])
    return f"resume {where}, keeping the earlier chapters' files: {command}"


def _compare_after_run(run_dir: str, reference: str | None) -> None:
    """The end of a full run: its metrics against the reference, printed; never changes the exit code."""
    from .compare import compare_run

    try:
        result = compare_run(run_dir, reference)
    except (FileNotFoundError, ValueError) as exc:  # no reference for this scale or seed: say so, nothing to compare
        print(f"[ersam] compare: skipped: {exc}", file=sys.stderr)
        return
    print(result.report())
    if not result.ok:
        print(f"[ersam] compare: WARNING: {len(result.failures)} metric(s) out of tolerance or missing against "
              f"{result.reference} (listed above as OUT/missing); the run itself succeeded", file=sys.stderr)


def _compare(args: argparse.Namespace) -> int:
    """``ersam compare``: 0 when every checked metric is within tolerance, 1 when not, 2 on bad input."""
    from .compare import compare_run, default_reference, load_reference, record_reference, time_table

    if args.times:
        print(time_table(load_reference(args.reference or default_reference("tutorial"))))
        return 0
    if args.run_dir is None:
        raise ValueError("compare needs the RUN_DIR of a run (or --times)")

    if not summary_path(args.run_dir).exists():
        raise FileNotFoundError(f"{summary_path(args.run_dir)} does not exist: not a run folder")
    if args.record:
        written = record_reference(args.run_dir, args.reference, args.record_command, args.spread_from)
        print(f"[ersam] compare: reference written to {written}")
        return 0
    result = compare_run(args.run_dir, args.reference)
    print(result.report())
    return 0 if result.ok else 1


def _students(args: argparse.Namespace) -> int:
    """``ersam students``: write the student copies, or with ``--check`` say whether they are in sync."""
    from .students import STUDENT_DIR, out_of_sync, write_student_copies

    out = args.out_dir or STUDENT_DIR
    if args.check:
        wrong = out_of_sync(out)
        if wrong:
            print(f"[ersam] students: out of sync in {out}: {', '.join(wrong)}; run python -m ersam_lib students",
                  file=sys.stderr)
            return 1
        print(f"[ersam] students: {out} is in sync")
        return 0
    written = write_student_copies(out)
    print(f"[ersam] students: {len(written)} student copies in {out}")
    return 0
