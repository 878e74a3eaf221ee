"""``python -m data_prep build ...``: build LibriSpeech-SAM from the command line (chapter 1)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ersam_lib.core.arguments import non_negative_int, positive_int
from ersam_lib.core.rundir import check_run_dir

from .config import SOURCES, DataConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the data set into RUN_DIR/data")
    b.add_argument("--source", choices=list(SOURCES), default=None,
                   help="primary source (default: the scale's: tts, or librispeech at paper scale)")
    b.add_argument("--root", help="LibriSpeech tree (default $ERSAM_LIBRISPEECH) or speaker folder; not used by tts, "
                                  "librimini's default is the repository's copy")
    b.add_argument("--train-sources", help="comma-separated sources of train/val, e.g. tts | librimini | "
                                           "tts,librimini (default: the primary source)")
    b.add_argument("--real", choices=["librimini", "none"], default=None,
                   help="real-speech evaluation splits (default: librimini, none when it is the primary source)")
    b.add_argument("--real-root", help="another librispeech-mini copy (default $ERSAM_LIBRIMINI, else the repo's)")
    b.add_argument("--out", required=True, help="RUN_DIR: the data goes to RUN_DIR/data")
    b.add_argument("--scale", default="tutorial", choices=["smoke", "tutorial", "paper"])
    b.add_argument("--seed", type=non_negative_int, default=0)
    b.add_argument("--max-count", type=positive_int, help="K, the largest count class (default: the scale's)")
    b.add_argument("--class-set", choices=["counts", "levels"], default="counts")
    b.add_argument("--features", default="logmel", help="comma-separated feature kinds: logmel,stft")
    b.add_argument("--on-error", choices=["skip", "raise"], default="skip", help="unreadable audio files")
    b.add_argument("--workers", type=positive_int, help="processes for synthesis and mixing")
    d = sub.add_parser("download", help="download and verify LibriSpeech subsets (needs internet)")
    d.add_argument("--root", required=True, help="folder that will hold LibriSpeech/<subset>")
    d.add_argument("--subset", action="append", required=True,
                   help="e.g. train-clean-360, dev-clean, test-clean (repeatable)")
    return p


def _download(args: argparse.Namespace) -> int:
    from .sources import SourceError, download_librispeech

    for subset in args.subset:
        try:
            print(download_librispeech(subset, args.root) / subset)
        except (SourceError, ValueError, OSError) as e:
            print(f"error: {subset}: {e}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "download":
        return _download(args)
    kinds = tuple(k.strip() for k in args.features.split(",") if k.strip())
    if not kinds or set(kinds) - {"logmel", "stft"}:
        p.error(f"--features: a comma-separated list of logmel and/or stft, got {args.features!r}")
    overrides = {"root": args.root, "seed": args.seed, "class_set": args.class_set, "feature_kinds": kinds,
                 "on_error": args.on_error, "real_root": args.real_root}
    if args.source is not None:
        overrides["source"] = args.source
    if args.train_sources:
        overrides["train_sources"] = tuple(s.strip() for s in args.train_sources.split(",") if s.strip())
    if args.real is not None:
        overrides["real_source"] = None if args.real == "none" else args.real
    if args.max_count is not None:
        overrides["max_count"] = args.max_count
    if args.workers is not None:
        overrides["workers"] = args.workers
    cfg = DataConfig.for_scale(args.scale, **overrides)
    from .build import build  # heavy imports only once the arguments parsed
    from .sources.base import SourceError

    try:
        cfg.validate()
        check_run_dir(args.out, create=False)  # nothing is written before the source is checked
        report = build(cfg, args.out)
    except (SourceError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in dataclasses.asdict(report).items():
        print(f"{key}: {value}")
    print(f"mixtures_per_s: {report.mixtures_per_s:.1f}")
    return 0
