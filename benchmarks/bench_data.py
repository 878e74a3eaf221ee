"""Chapter 1 speed target: build the tutorial-scale LibriSpeech-SAM (synthesis, mixing, features) in < 5 min.

Run under the heavy-job lock so timings are honest:

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_data.py --scale tutorial

Prints synthesis speed (utterances/s, x real time), recipe sampling, mixing + feature extraction (mixtures/s) and
the total. By default the TTS corpus is synthesised into a fresh temporary cache, so synthesis is always timed;
``--keep-cache`` reuses ``$ERSAM_CACHE``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from data_prep import DataConfig, build, load_dataset_info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tutorial")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="RUN_DIR to build into (default: a temporary folder)")
    p.add_argument("--keep-cache", action="store_true", help="reuse $ERSAM_CACHE instead of a fresh cache")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_cache:
            os.environ["ERSAM_CACHE"] = os.path.join(tmp, "cache")
        run_dir = args.out or os.path.join(tmp, "run")
        cfg = DataConfig.for_scale(args.scale, workers=args.workers)
        t0 = time.perf_counter()
        report = build(cfg, run_dir)
        total = time.perf_counter() - t0
        info = load_dataset_info(run_dir)
        src = info["source"]
        n_utt = src["n_utterances"]
        print(f"scale={args.scale} workers={args.workers} cpus={os.cpu_count()}")
        print(f"speakers: {report.n_speakers} (train/val/test {info['speakers']})  utterances: {n_utt}  "
              f"speech: {src['seconds'] / 3600:.2f} h")
        if src.get("synth_wall_s"):
            print(f"synthesis: {src['synth_wall_s']:.1f} s  {n_utt / src['synth_wall_s']:.1f} utterances/s  "
                  f"{src['x_real_time']:.0f}x real time")
        else:
            print(f"synthesis: reused cached corpus ({report.source_s:.1f} s to open)")
        print(f"recipes: {report.n_mixtures} in {report.manifest_s:.1f} s  "
              f"({report.n_mixtures / report.manifest_s:.0f} recipes/s)")
        print(f"mixing + features: {report.render_s:.1f} s  {report.mixtures_per_s:.1f} mixtures/s")
        print(f"train mixtures: {sum(info['counts']['train'].values())}  classes: {len(info['classes'])}")
        print(f"total build: {total:.1f} s ({'under' if total < 300 else 'OVER'} the 5-minute target)")


if __name__ == "__main__":
    main()
