"""Chapter 6's deployed programs: latency per 5-s window, size and peak memory per runtime and precision, and the
meter's real-time factor on one core with the deployed ExecuTorch program (decoding + front end + model).

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_deploy.py RUN_DIR [--seconds 600] [--repeats 3]

RUN_DIR must hold chapter 6's programs (``RUN_DIR/deploy/*.pte``, ``*_onnx.onnx`` with their cards, written by
``notebooks/06_deploy.ipynb``). Every program is re-measured here with chapter 2's protocol at the tutorial scale's
repeats (:func:`ersam_lib.deploy.measure_program`: one thread, warm-up, minimum and median; peak memory in a fresh
process), then the meter streams a synthetic recording through each ExecuTorch program
(:func:`bench_meter.time_meter`, pinned to one core).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_meter import one_core, report, time_meter

from ersam_lib.deploy import measure_program
from ersam_lib.export import TimingConfig
from ersam_lib.io import read_json
from ersam_lib.meter import card_path, load_counter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a RUN_DIR where chapter 6 ran")
    p.add_argument("--seconds", type=float, default=600.0, help="length of the meter's synthetic recording")
    p.add_argument("--repeats", type=int, default=3, help="meter runs per program (the best is reported)")
    args = p.parse_args()
    programs = sorted(Path(args.run_dir, "deploy").glob("*.pte")) + sorted(Path(args.run_dir, "deploy").glob(
        "*.onnx"))
    if not programs:
        sys.exit(f"no deployed programs in {args.run_dir}/deploy: run chapter 06 first")
    one_core()
    print(f"host: {platform.node()} {platform.processor() or platform.machine()}, 1 thread on 1 core, "
          f"torch {torch.__version__}")
    print(f"{'program':44s} {'runtime':11s} {'precision':9s} {'ms min':>7s} {'ms med':>7s} {'kB':>7s} {'peak MB':>8s}")
    latency = {}
    for path in programs:
        card = read_json(card_path(path))
        m = measure_program(path, TimingConfig.for_scale("tutorial"))
        latency[(card["format"], card["precision"])] = m["latency_ms"]
        print(f"{path.name:44s} {card['format']:11s} {card['precision']:9s} {m['latency_ms']:7.2f} "
              f"{m['latency_median_ms']:7.2f} {m['size_kb']:7.0f} {m['peak_mb']:8.1f}")
    for fmt in ("executorch", "onnx"):
        if (fmt, "float") in latency and (fmt, "int8") in latency:
            print(f"{fmt}: int8 / float latency = {latency[(fmt, 'int8')] / latency[(fmt, 'float')]:.2f}")
    for path in (q for q in programs if q.suffix == ".pte"):
        runs, windows = time_meter(load_counter(path, threads=1), args.seconds, repeats=args.repeats)
        print(f"meter with {path.name}: {args.seconds:.0f} s of 16-kHz mono, {windows} windows")
        print("  " + report(runs, windows, args.seconds).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
