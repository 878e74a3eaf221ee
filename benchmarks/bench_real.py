"""Chapter 1's real-speech splits: what they add to the build (issue 13 target: at most ~3 minutes on 2 cores).

Run under the heavy-job lock so timings are honest:

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_real.py --scale tutorial

Builds the same scale twice from the cached TTS corpus into fresh run folders: without real speech
(``real_source=None``) and with it (the default: ``real_val``, ``real_test``, ``real_test_other`` from the
repository's LibriSpeech miniature, plus real training speech if ``--train-sources`` asks for it), and prints each
build's stages and the difference. ``--keep-cache`` is implied: the TTS synthesis is not what is measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from data_prep import DataConfig, build, load_dataset_info
from data_prep.config import REAL_SPLITS
from data_prep.sources import open_sources


def _line(name: str, report, total: float) -> str:
    return (f"{name:<12} mixtures {report.n_mixtures:>6}  sources {report.source_s:6.1f} s  recipes "
            f"{report.manifest_s:6.1f} s  mixing + features {report.render_s:6.1f} s "
            f"({report.mixtures_per_s:5.1f}/s)  total {total:6.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tutorial")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-sources", default=None, help="e.g. tts,librimini for the 'with real' build")
    args = p.parse_args()
    base = DataConfig.for_scale(args.scale, workers=args.workers)
    t0 = time.perf_counter()
    open_sources(base)  # synthesises the TTS corpus once if it is not cached, outside the timings
    print(f"scale={args.scale} workers={args.workers} cpus={os.cpu_count()}  (sources ready in "
          f"{time.perf_counter() - t0:.1f} s)")
    extra = {"train_sources": tuple(args.train_sources.split(","))} if args.train_sources else {}
    configs = {"synthetic": DataConfig.for_scale(args.scale, workers=args.workers, real_source=None),
               "with real": DataConfig.for_scale(args.scale, workers=args.workers, **extra)}
    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            run_dir = os.path.join(tmp, name.replace(" ", "_"))
            start = time.perf_counter()
            report = build(cfg, run_dir)
            totals[name] = (report, time.perf_counter() - start)
            print(_line(name, report, totals[name][1]), flush=True)
            if name == "with real":
                info = load_dataset_info(run_dir)
                for split in REAL_SPLITS:
                    if split in info["counts"]:
                        print(f"  {split:<16} {sum(info['counts'][split].values()):>5} mixtures "
                              f"({info['counts'][split]['0']} per class), {info['speakers'][split]} speakers")
                print(f"  train from {info['train_sources']}: {sum(info['counts']['train'].values())} mixtures")
    (a, ta), (b, tb) = totals["synthetic"], totals["with real"]
    print(f"real parts add: {b.n_mixtures - a.n_mixtures} mixtures, {tb - ta:+.1f} s in all "
          f"(sources {b.source_s - a.source_s:+.1f}, recipes {b.manifest_s - a.manifest_s:+.1f}, "
          f"mixing + features {b.render_s - a.render_s:+.1f}); target <= 180 s")


if __name__ == "__main__":
    main()
