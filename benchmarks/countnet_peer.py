"""CountNet's published models as the book's peer: parameters, eager latency, and whether ``torch.export`` takes them.

    python benchmarks/countnet_peer.py [--repeats 30] [--threads 1] [--export [--no-lower]] [--models F-CRNN]

Prints, per published model: trainable parameters, the median (and p10/p90) wall time of one eager forward pass of
one 5-s segment (``INPUT_SHAPE``, ``time.perf_counter``, after warm-up, ``torch.set_num_threads(threads)``), and with
``--export`` the time ``torch.export`` and the ExecuTorch/XNNPACK lowering take (and the .pte's latency under
chapter 2's protocol), or the error that stops them.
The figures are for the machine it runs on; chapter 2's protocol (``ersam_lib.measure.devices``) is the book's reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ersam_lib.measure.devices import get_device
from ersam_lib.measure.export import export_executorch
from ersam_lib.models.countnet import INPUT_SHAPE, PUBLISHED, load_published


def eager_latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> list[float]:
    out = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    return out


def try_export(model: torch.nn.Module, x: torch.Tensor, lower: bool = True) -> None:
    """Print how ``torch.export`` and the ExecuTorch/XNNPACK lowering fare, stage by stage (or why they refuse)."""
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (x,))
        print(f"  torch.export ok: {len(exported.graph.nodes)} graph nodes, {time.perf_counter() - t0:.1f} s",
              flush=True)
        with torch.no_grad():
            diff = (exported.module()(x) - model(x)).abs().max().item()
        print(f"  exported program vs eager: max abs diff of the logits {diff:.1e}", flush=True)
        if not lower:
            return
        t1 = time.perf_counter()
        with torch.no_grad():
            pte = export_executorch(model, x)
        print(f"  ExecuTorch/XNNPACK ok: {len(pte) / 1e6:.2f} MB .pte, {time.perf_counter() - t1:.1f} s", flush=True)
        stats = get_device("host", backend="executorch", threads=torch.get_num_threads()).measure(pte, INPUT_SHAPE)
        print(f"  ExecuTorch latency (chapter 2's protocol): median {stats.median:.2f} ms (n={stats.count})",
              flush=True)
    except Exception as e:  # report, do not hide: the point is to learn whether and why it refuses
        first = str(e).splitlines()[0][:300] if str(e) else ""
        print(f"  refused after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {first}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--no-lower", action="store_true", help="with --export: stop after torch.export")
    ap.add_argument("--models", default=",".join(PUBLISHED), help="comma-separated subset of PUBLISHED")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32) * 0.07)
    for name in args.models.split(","):
        model = load_published(name)
        n_params = sum(p.numel() for p in model.parameters())
        ms = eager_latency_ms(model, x, args.repeats)
        q = np.percentile(ms, [10, 90])
        print(f"{name}: {n_params:,} parameters; eager {args.threads} thread(s), input {tuple(INPUT_SHAPE)}: "
              f"median {statistics.median(ms):.1f} ms (p10 {q[0]:.1f}, p90 {q[1]:.1f}, n={len(ms)})", flush=True)
        if args.export:
            try_export(model, x, lower=not args.no_lower)


if __name__ == "__main__":
    main()
