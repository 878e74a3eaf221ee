"""Chapters 3-4 speed: teacher training/inference and supernet training per distillation mode (ms per sample).

Run under the heavy-job lock so timings are honest:

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_train.py --scale tutorial --threads 2

On random log-mel batches of the scale's shape, prints: the teacher's parameters, MMACs, training and inference
milliseconds per sample; one sandwich step per sample for each distillation mode (none, full, selective at τ = 0.9) with
the share of samples it sent to the teacher (an untrained net is uncertain everywhere); and the projected wall time
of chapters 3 and 4 at that scale from :class:`TeacherConfig`/:class:`TrainConfig`/:class:`AblationConfig`.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from ersam_lib.experiments.ablation import AblationConfig
from ersam_lib.measure.complexity import macs_per_sample
from ersam_lib.models.space import SearchSpace
from ersam_lib.models.supernet import Supernet
from ersam_lib.models.teacher import CRNNTeacher, TeacherConfig
from ersam_lib.training.distill import DistillConfig, SelectiveTeacher
from ersam_lib.training.train import TrainConfig, sandwich_archs, sandwich_step

SHAPES = {"smoke": (32, 126, 4), "tutorial": (40, 250, 11), "paper": (64, 501, 11)}  # (F, T, classes)


def per_sample_ms(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats / batch * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tutorial", choices=list(SHAPES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    f, t, k = SHAPES[args.scale]
    tcfg, cfg, acfg = TeacherConfig.for_scale(args.scale), TrainConfig.for_scale(args.scale), \
        AblationConfig.for_scale(args.scale)
    b = cfg.batch_size
    x, y = torch.randn(b, f, t), torch.randint(0, k, (b,))
    print(f"scale={args.scale} threads={args.threads} batch={b} input=({f}, {t}) classes={k}")

    teacher = CRNNTeacher(f, k, tuple(tcfg.channels), tcfg.hidden)
    opt = torch.optim.AdamW(teacher.parameters())

    def teacher_step() -> None:
        loss = F.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_train = per_sample_ms(teacher_step, b, args.repeats)
    teacher.eval()
    with torch.no_grad():
        t_fwd = per_sample_ms(lambda: teacher(x), b, args.repeats)
    print(f"teacher CRNN {tcfg.channels}/{tcfg.hidden}: {sum(q.numel() for q in teacher.parameters()) / 1e3:.1f} k "
          f"params, {macs_per_sample(teacher, x) / 1e6:.1f} MMACs, train {t_train:.2f} ms/sample, "
          f"inference {t_fwd:.2f} ms/sample")

    space = SearchSpace.for_scale(args.scale, f, k, n_frames=t)
    net = Supernet(space)
    sopt = torch.optim.AdamW(net.parameters())
    step_ms = {}
    for d in (DistillConfig(mode="none"), DistillConfig(mode="full"), DistillConfig(mode="selective", tau=0.9)):
        sel = SelectiveTeacher(teacher if d.uses_teacher else None, d)
        rng = random.Random(0)
        step_ms[d.mode] = per_sample_ms(lambda: sandwich_step(net, sandwich_archs(space, rng, cfg.n_random), (x, y),
                                                              sopt, sel, TrainConfig(distill=d)), b, args.repeats)
        print(f"sandwich step ({d.label():>16}): {step_ms[d.mode]:.2f} ms/sample, teacher query rate "
              f"{sel.stats()['query_rate']:.2f}")

    n_train = {"smoke": 160, "tutorial": 10_010, "paper": 22_000}[args.scale]
    ch3 = n_train * tcfg.epochs * (t_train + 3.0) / 1e3  # + the largest subnet alone, ~3 ms/sample
    per_variant = min(n_train, cfg.max_train_samples or n_train) * cfg.epochs / 1e3
    n = len(acfg.variants)
    low = per_variant * (step_ms["none"] * (n - 1) + step_ms["full"])  # selective variants cost like 'none' ...
    high = per_variant * (step_ms["none"] + step_ms["full"] * (n - 1))  # ... or like 'full'
    print(f"projected: chapter 3 ~{ch3 / 60:.1f} min, chapter 4 {low / 60:.1f}-{high / 60:.1f} min "
          f"({n} variants; selective ones lie between 'none' and 'full' by their query rate)")


if __name__ == "__main__":
    main()
