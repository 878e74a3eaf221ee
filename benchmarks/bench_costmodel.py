"""Benchmark of chapter 2's cost model: accuracy on freshly drawn held-out architectures, and prediction speed.

Run it under the heavy-job lock so that timings stay honest on a shared machine::

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_costmodel.py --run-dir runs/tutorial

With ``--run-dir`` holding chapter 2's output it loads that cost model (measured in an earlier session) and draws
``--n`` new architectures from chapter 4's space with a different seed; otherwise it builds a cost model first.
Layers of the new architectures that the LUT lacks are profiled once (what a search does when it meets a new layer
configuration); the accuracy is printed both before (fallback fit) and after filling them. Done-when targets of
issue 4: >= 90 % within +-10 % of measured single-thread latency, Spearman >= 0.95.

``--runtime executorch`` checks chapter 2's model of the deployed runtime instead (issue 11): the architectures
are exported to ExecuTorch + XNNPACK and timed there; the LUT stays eager's. Every run also prints the
measurement's own repeatability (the first two of ``rounds`` measurement passes against each other)::

    .venv/bin/python benchmarks/bench_costmodel.py --run-dir runs/tutorial --runtime executorch --n 40 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

import pandas as pd
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", type=Path, default=None, help="RUN_DIR with chapter 2's profiling/ (optional)")
    p.add_argument("--scale", default="tutorial")
    p.add_argument("--n", type=int, default=60, help="held-out architectures to measure")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--runtime", default="eager", choices=("eager", "executorch"),
                   help="the runtime whose cost model is checked (executorch: chapter 2's deployed-runtime model)")
    p.add_argument("--rounds", type=int, default=None, help="measurement passes (default: the scale's)")
    args = p.parse_args()

    from ersam_lib.experiments import profiling as prof
    from ersam_lib.measure.costmodel import CostModel
    from ersam_lib.measure.devices import get_device
    from ersam_lib.measure.export import TimingConfig
    from ersam_lib.models.space import SearchSpace

    torch.set_num_threads(1)
    cfg = prof.ProfilingConfig.for_scale(args.scale)
    timing = TimingConfig.for_scale(args.scale)
    device = get_device("host", backend="eager", threads=1, timing=timing)  # the LUT's layers: always eager
    measure_on = device if args.runtime == "eager" else get_device("host", backend=args.runtime, threads=1,
                                                                   timing=timing)
    rounds = args.rounds or cfg.rounds
    rng = random.Random(args.seed)
    rule = None
    if args.run_dir is not None and (args.run_dir / "profiling" / "costmodel.json").exists():
        cm = CostModel.load(args.run_dir, runtime=args.runtime)
        rule = prof.CostRule.load(args.run_dir / "profiling" / "rule.json")
        print(f"loaded cost model from {args.run_dir} ({len(cm.lut)} LUT entries, device {cm.device}, "
              f"statistic {cm.statistic})")
    space = SearchSpace.for_scale(args.scale, n_features=cfg.n_features, n_classes=cfg.n_classes, rule=rule,
                                  n_frames=cfg.n_frames)
    if rule is None:
        if args.runtime != "eager":
            raise SystemExit("--runtime executorch needs --run-dir with chapter 2's profiling/")
        t0 = time.perf_counter()
        train = prof.sample_space_models(space, cfg.n_train_archs, rng, "train")
        cm, _ = prof.build_cost_model(device, train, seed=args.seed, rounds=cfg.rounds, statistic=cfg.statistic)
        print(f"built cost model: {len(cm.lut)} LUT entries, {len(train)} train archs, "
              f"{time.perf_counter() - t0:.1f} s")
    held = prof.sample_space_models(space, args.n, rng, "bench")

    t0 = time.perf_counter()
    before = [cm.predict(m, s) for _, m, s in held]
    predict_ms = (time.perf_counter() - t0) * 1000 / len(held)
    filled = copy.deepcopy(cm)
    t0 = time.perf_counter()
    n_new = prof.fill_lut(filled.lut, held, device)
    filled.refit_fallback()
    fill_s = time.perf_counter() - t0
    after = [filled.predict(m, s) for _, m, s in held]
    t0 = time.perf_counter()
    stats = prof.measure_models(held, measure_on, rounds=rounds)
    measured = [getattr(s, cm.statistic) for s in stats]
    measure_s = time.perf_counter() - t0
    rounds_ms = [s.metadata.get(f"round_{cm.statistic}", [v]) for s, v in zip(stats, measured)]

    print(f"held-out architectures: {len(held)} (seed {args.seed}); LUT coverage before filling "
          f"{sum(e.lut_coverage for e in before) / len(before):.3f}; {n_new} new layer configs profiled in "
          f"{fill_s:.1f} s; end-to-end measurement {measure_s:.1f} s")
    print(f"prediction cost: {predict_ms:.2f} ms per architecture (trace + features + forest)")
    print(f"runtime {args.runtime}, statistic {cm.statistic}, {rounds} rounds: measured "
          f"{min(measured):.4f} to {max(measured):.4f} ms (median {sorted(measured)[len(measured) // 2]:.4f})")
    for label, est in (("fallback for unseen layers", before), ("LUT filled", after)):
        df = pd.DataFrame({"measured_ms": measured, "latency_ms": [e.latency_ms for e in est],
                           "lut_latency_ms": [e.lut_latency_ms for e in est], "macs": [e.macs for e in est]})
        df["rel_err"] = (df.latency_ms - df.measured_ms) / df.measured_ms
        df["lut_rel_err"] = (df.lut_latency_ms - df.measured_ms) / df.measured_ms
        if rounds >= 2:
            df["round1_ms"], df["round2_ms"] = [r[0] for r in rounds_ms], [r[1] for r in rounds_ms]
        s = prof.summarize_validation(df)
        print(f"[{label}] MAPE {s['mape']:.3f} | within +-10 %: {s['within10']:.3f} | Spearman {s['spearman']:.3f}"
              f" | LUT-only MAPE {s['lut_mape']:.3f} | MACs Spearman {s['macs_spearman']:.3f}"
              f" | max |err| {s['max_abs_err']:.3f}")
    if rounds >= 2:
        print(f"repeatability (round 1 against round 2 of the same architecture): within +-10 %: "
              f"{s['repeat_within10']:.3f} | Spearman {s['repeat_spearman']:.3f}")


if __name__ == "__main__":
    main()
