"""Training steps with glibc's default malloc against the settings the runner and ``make`` use (``MALLOC_ENV``).

Run:  .venv/bin/python benchmarks/bench_malloc.py --threads 2
Each setting runs in a fresh process (glibc reads the variables at start-up only): one AdamW step of chapter 3's
tutorial teacher (the CRNN, batch 64 of chapter 1's log-mels) and one of the largest subnet of chapter 4's space, both
on random inputs. Prints milliseconds per step, the process's user and system CPU seconds and its minor page faults.
With the default settings glibc maps each large activation afresh and unmaps it on ``free``, so every step faults its
pages in again (zero-filled by the kernel); the system time and the fault count show it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ersam_lib.core.repro import MALLOC_ENV, training_env

CHILD = r"""
import json, resource, sys, time
import torch
import torch.nn.functional as F
from data_prep.config import DataConfig
from ersam_lib.models.space import SearchSpace, build_model
from ersam_lib.models.teacher import CRNNTeacher, TeacherConfig

threads, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(threads)
data = DataConfig.for_scale("tutorial")  # chapter 1's log-mels: (n_mels, frames of a 5-s segment), K + 1 classes
frames = int(data.duration_s * data.sample_rate) // data.features.hop_length + 1
space = SearchSpace.for_scale("tutorial", n_features=data.features.n_mels, n_classes=data.max_count + 1,
                              n_frames=frames)
cfg = TeacherConfig.for_scale("tutorial")
models = {"teacher (CRNN)": CRNNTeacher(space.n_features, space.n_classes, cfg.channels, cfg.hidden),
          "largest subnet": build_model(space.largest(), space.n_features, space.n_classes, space.attn_dim)}
x = torch.randn(64, space.n_features, space.n_frames)
y = torch.randint(0, space.n_classes, (64,))
out = {}
for name, model in models.items():
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    step()  # warm-up
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        step()
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    out[name] = {"ms_per_step": wall / repeats * 1000, "user_s": r1.ru_utime - r0.ru_utime,
                 "sys_s": r1.ru_stime - r0.ru_stime, "minor_faults": r1.ru_minflt - r0.ru_minflt}
print(json.dumps(out))
"""


def run(env: dict[str, str], threads: int, repeats: int) -> dict[str, dict[str, float]]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(repeats)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    plain = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    results = {"glibc default": run(plain, args.threads, args.repeats),
               "MALLOC_ENV": run(training_env(plain), args.threads, args.repeats)}
    print(f"{args.threads} threads, {args.repeats} steps each; MALLOC_ENV = {MALLOC_ENV}")
    print(f"{'setting':<15} {'model':<16} {'ms/step':>9} {'user s':>8} {'sys s':>7} {'minor faults':>13}")
    for setting, models in results.items():
        for model, r in models.items():
            print(f"{setting:<15} {model:<16} {r['ms_per_step']:>9.0f} {r['user_s']:>8.1f} {r['sys_s']:>7.1f} "
                  f"{r['minor_faults']:>13,}")
    for model in results["MALLOC_ENV"]:
        speedup = results["glibc default"][model]["ms_per_step"] / results["MALLOC_ENV"][model]["ms_per_step"]
        print(f"{model}: {speedup:.2f}x faster with MALLOC_ENV")


if __name__ == "__main__":
    main()
