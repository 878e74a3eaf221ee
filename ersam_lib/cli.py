"""Command line: ``python -m ersam_lib run|book`` (also installed as ``ersam``). Chapter 0 documents it."""

from __future__ import annotations

import argparse
import sys

from .runner import DEFAULT_NOTEBOOKS, NotebookFailed, run_pipeline
from .scales import SCALES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ersam", description="Run and render the ERSAM book.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the chapter notebooks with papermill")
    run.add_argument("--scale", choices=SCALES, default="tutorial")
    run.add_argument("--run-dir", required=True, help="folder for all results of this run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--notebooks", default=str(DEFAULT_NOTEBOOKS), help="folder of NN_*.ipynb chapters")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--only", help="run one chapter (e.g. 02), reusing earlier chapters' files in RUN_DIR")
    group.add_argument("--from", dest="from_", help="resume at a chapter (e.g. 03)")
    run.add_argument("--timeout", type=float, default=3600.0, help="wall-clock limit per notebook, seconds")
    run.add_argument("--cell-timeout", type=float, default=None, help="limit per cell, seconds (default: --timeout)")
    book = sub.add_parser("book", help="render the executed notebooks of a run as a Jupyter Book")
    book.add_argument("--run-dir", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        try:
            summary = run_pipeline(
                args.run_dir, args.scale, args.seed, args.notebooks, args.only, args.from_,
                args.timeout, args.cell_timeout,
            )
        except NotebookFailed as exc:
            print(f"[ersam] FAILED: {exc}", file=sys.stderr)
            return 1
        except (ValueError, FileNotFoundError) as exc:
            print(f"[ersam] error: {exc}", file=sys.stderr)
            return 2
        total = sum(c["wall_s"] for c in summary["chapters"].values())
        print(f"[ersam] done: {len(summary['chapters'])} chapters, {total:.0f} s; summary in {args.run_dir}/summary.json")
        return 0
    from .book import build_book

    print(f"[ersam] book: {build_book(args.run_dir)}")
    return 0
