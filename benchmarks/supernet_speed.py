"""Forward+backward time of chapter 4's subnets on a CPU batch (what sizes the tutorial training budget).

Run heavy:  flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/supernet_speed.py --threads 2
Prints parameters, MMACs per segment and milliseconds per fwd+bwd on a batch of (B, F, T) random log-mels, for the
largest and smallest static networks, the same archs run through the supernet, and one sandwich step
(largest + smallest + 2 random subnets, one optimiser step).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from ersam_lib.measure.complexity import count_params
from ersam_lib.models.space import SearchSpace, build_model
from ersam_lib.models.supernet import Supernet


def time_step(step, repeats: int) -> float:
    step()  # warm-up (allocations, one-off kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def fwd_bwd(model, x, y):
    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", default="tutorial")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.for_scale(args.scale, args.features, args.classes, n_frames=args.frames)
    x = torch.randn(args.batch, args.features, args.frames)
    y = torch.randint(0, args.classes, (args.batch,))
    net = Supernet(space).train()
    print(f"scale={args.scale} batch={args.batch} F={args.features} T={args.frames} threads={args.threads} "
          f"space size={space.size():.3g} torch={torch.__version__}")
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        static = build_model(arch, args.features, args.classes, space.attn_dim).train()
        net.set_active_subnet(arch)
        print(f"{name:8s} {arch.describe()}")
        print(f"  params={count_params(static)}  MMACs/segment={space.macs(arch) / 1e6:.2f}  "
              f"static fwd+bwd={time_step(fwd_bwd(static, x, y), args.repeats):.1f} ms  "
              f"supernet fwd+bwd={time_step(fwd_bwd(net, x, y), args.repeats):.1f} ms")
    rng = random.Random(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def sandwich():
        opt.zero_grad(set_to_none=True)
        for arch in (space.largest(), space.smallest(), space.sample(rng), space.sample(rng)):
            net.set_active_subnet(arch)
            F.cross_entropy(net(x), y).backward()
        opt.step()

    print(f"sandwich step (largest+smallest+2 random): {time_step(sandwich, args.repeats):.1f} ms")


if __name__ == "__main__":
    main()
