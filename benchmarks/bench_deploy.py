"""Chapter 6's deployed programs: latency per 5-s window, size and peak memory per runtime and precision, and the
meter's real-time factor on one core with the deployed ExecuTorch program (decoding + front end + model).

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_deploy.py [RUN_DIR] [--seconds 600] [--repeats 3]

RUN_DIR must hold chapter 6's programs (``RUN_DIR/deploy/*.pte``, ``*_onnx.onnx`` with their cards, written by
``notebooks/06_deploy.ipynb``). Without it, the tutorial scale's shapes are deployed into a temporary folder: the
tutorial front end (40 mel bands, hop 20 ms) and the tutorial space's largest architecture (random weights, int8
calibrated on noise: only the costs mean anything), float and int8, ExecuTorch and ONNX. Every program is re-measured
here with chapter 2's protocol at the tutorial scale's repeats (:func:`ersam_lib.experiments.deploy.measure_program`:
one thread, warm-up, minimum and median; peak memory in a fresh process), then the meter streams a synthetic recording
through each ExecuTorch program (:func:`bench_meter.time_meter`, pinned to one core).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_meter import default_counter, one_core, report, time_meter

from ersam_lib.core.cards import ModelCard
from ersam_lib.experiments.deploy import AudioCounter, export_program, measure_program, quantize_pt2e
from ersam_lib.experiments.meter import load_counter
from ersam_lib.measure.export import TimingConfig
from ersam_lib.measure.frontend import LogMelFrontEnd


def tutorial_programs(folder: Path) -> list[Path]:
    """The tutorial scale's shapes deployed into ``folder`` (see the module docstring)."""
    counter, desc = default_counter()
    fe = LogMelFrontEnd(counter.features)
    with torch.no_grad():
        calibration = fe(0.1 * torch.randn(64, 80_000))
    models = {"float": counter.model, "int8": quantize_pt2e(counter.model, calibration)}
    shape = [1, counter.features.n_mels, fe.n_frames(80_000)]
    card = ModelCard(file="tutorial-largest.pt", format="state_dict", sha256="", classes=tuple(counter.classes),
                     input={"kind": "logmel", "shape": shape}, name="tutorial-largest", architecture={"desc": desc})
    paths = []
    for precision, model in models.items():
        module = AudioCounter(fe, model).eval()
        for suffix in (".pte", "_onnx.onnx"):
            paths.append(export_program(module, folder / f"tutorial_{precision}{suffix}", card, precision=precision))
    print(f"model: {desc}; tutorial front end (40 mel bands x 251 frames)")
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", help="a RUN_DIR where chapter 6 ran (default: the tutorial shapes)")
    p.add_argument("--seconds", type=float, default=600.0, help="length of the meter's synthetic recording")
    p.add_argument("--repeats", type=int, default=3, help="meter runs per program (the best is reported)")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.run_dir is None:
        programs = tutorial_programs(Path(tmp.name))
    else:
        deploy = Path(args.run_dir, "deploy")
        programs = sorted(deploy.glob("*.pte")) + sorted(deploy.glob("*.onnx"))
    if not programs:
        sys.exit(f"no deployed programs in {args.run_dir}/deploy: run chapter 06 first")
    one_core()
    print(f"host: {platform.node()} {platform.processor() or platform.machine()}, 1 thread on 1 core, "
          f"torch {torch.__version__}")
    print(f"{'program':44s} {'runtime':11s} {'precision':9s} {'ms min':>7s} {'ms med':>7s} {'kB':>7s} {'peak MB':>8s}")
    latency = {}
    for path in programs:
        card = ModelCard.load(path)
        m = measure_program(path, TimingConfig.for_scale("tutorial"))
        latency[(card.format, card.precision)] = m["latency_ms"]
        print(f"{path.name:44s} {card.format:11s} {card.precision:9s} {m['latency_ms']:7.2f} "
              f"{m['latency_median_ms']:7.2f} {m['size_kb']:7.0f} {m['peak_mb']:8.1f}")
    for fmt in ("executorch", "onnx"):
        if (fmt, "float") in latency and (fmt, "int8") in latency:
            print(f"{fmt}: int8 / float latency = {latency[(fmt, 'int8')] / latency[(fmt, 'float')]:.2f}")
    for path in (q for q in programs if q.suffix == ".pte"):
        runs, windows = time_meter(load_counter(path, threads=1), args.seconds, repeats=args.repeats)
        print(f"meter with {path.name}: {args.seconds:.0f} s of 16-kHz mono, {windows} windows")
        print("  " + report(runs, windows, args.seconds).replace("\n", "\n  "))
    tmp.cleanup()


if __name__ == "__main__":
    main()
