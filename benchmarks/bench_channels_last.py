"""Training step time of chapter 3's teacher and chapter 5's 2-D baselines in the default (NCHW) and channels-last
(NHWC) memory layouts, on this host's CPU: why :func:`ersam_lib.training.fit.train_classifier` trains the
MobileNetV2-style baseline channels-last (``MobileNetV2Audio.train_channels_last``) and nothing else.

    python benchmarks/bench_channels_last.py [--threads 2] [--steps 4] [--rounds 6]

One AdamW step of the tutorial's teacher and baselines on a batch of 64 tutorial log-mels (40 x 251, random values:
the time does not depend on them), after 2 warm-up steps; the layouts alternate ``--rounds`` times so that a host's
drift hits both, and the medians are compared (this host's speed drifts by tens of per cent within minutes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ersam_lib.models.baselines import build_baseline
from ersam_lib.models.teacher import CRNNTeacher, TeacherConfig

N_FEATURES, N_FRAMES, N_CLASSES, BATCH = 40, 251, 11, 64


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "teacher (CRNN)":
        cfg = TeacherConfig.for_scale("tutorial")
        return CRNNTeacher(N_FEATURES, N_CLASSES, cfg.channels, cfg.hidden)
    return build_baseline(name, N_FEATURES, N_CLASSES)


def ms_per_step(name: str, layout: torch.memory_format, steps: int) -> float:
    model = build(name).to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, N_FEATURES, N_FRAMES), torch.randint(0, N_CLASSES, (BATCH,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    print(f"{args.threads} threads, {args.steps} steps per measurement, {args.rounds} rounds, batch {BATCH}")
    print(f"{'model':18s} {'contiguous ms':>14s} {'channels_last ms':>17s} {'speed-up':>9s}")
    for name in ("teacher (CRNN)", "countnet_crnn", "mobilenetv2"):
        ms: dict[str, list[float]] = {k: [] for k in layouts}
        for _ in range(args.rounds):
            for k, layout in layouts.items():
                ms[k].append(ms_per_step(name, layout, args.steps))
        a, b = statistics.median(ms["contiguous"]), statistics.median(ms["channels_last"])
        print(f"{name:18s} {a:14.0f} {b:17.0f} {a / b:8.2f}x")


if __name__ == "__main__":
    main()
