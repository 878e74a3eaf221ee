"""Command line: ``python -m ersam_lib run|book|train`` (also installed as ``ersam``). Chapter 0 documents it.

- ``run``: execute the chapter notebooks with papermill (:mod:`ersam_lib.runner`);
- ``book``: render the executed notebooks of a run (:mod:`ersam_lib.book`);
- ``train``: train one supernet variant of chapter 4's ablation from a ``RUN_DIR``
  (:func:`ersam_lib.ablation.train_variant`); it works as is under ``torchrun``::

      torchrun --nproc_per_node 2 -m ersam_lib train --run-dir runs/tutorial --scale tutorial --mode selective
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .io import ArtifactError
from .rundir import check_run_dir, summary_path
from .runner import DEFAULT_NOTEBOOKS, NotebookFailed, RunInterrupted, run_pipeline
from .scales import SCALES

__all__ = ["build_parser", "fraction", "main", "non_negative_int", "positive_float", "positive_int", "train"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (epochs, workers)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (timeouts in seconds)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (thresholds on normalised uncertainties)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ersam", description="Run and render the ERSAM book.")
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
    book = sub.add_parser("book", help="render the executed notebooks of a run as a Jupyter Book")
    book.add_argument("--run-dir", required=True)
    book.add_argument("--out", default=None, help="folder for _build/html (default: book/, the reader's copy)")
    _add_train_parser(sub)
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

    from .ablation import train_variant
    from .distill import DistillConfig
    from .train import TrainConfig, dist_info, init_distributed

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command != "book":
            check_run_dir(args.run_dir, create=args.command == "run")
        if args.command == "run":
            return _run(args)
        if args.command == "train":
            return train(args)
        from .book import build_book

        try:
            print(f"[ersam] book: {build_book(args.run_dir, out_dir=args.out)}")
        except RuntimeError as exc:  # a chapter that is not a complete "ok" execution
            print(f"[ersam] error: {exc}", file=sys.stderr)
            return 2
        return 0
    except (ArtifactError, ValueError, OSError) as exc:  # bad input or a damaged file: one line, no traceback
        print(f"[ersam] error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    try:
        summary = run_pipeline(
            args.run_dir, args.scale, args.seed, args.notebooks, args.only, args.from_,
            args.timeout, args.cell_timeout,
        )
    except RunInterrupted as exc:
        print(f"[ersam] {exc}", file=sys.stderr)
        return 128 + exc.signum
    except NotebookFailed as exc:
        print(f"[ersam] FAILED: {exc}", file=sys.stderr)
        return 1
    total = sum(c["wall_s"] for c in summary["chapters"].values())
    print(f"[ersam] done: {len(summary['chapters'])} chapters, {total:.0f} s; "
          f"summary in {summary_path(args.run_dir)}")
    return 0
