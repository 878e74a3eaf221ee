"""What does the 2-D stem buy (issue 11)? One architecture with and without it, trained alone; and its training cost.

Run:  .venv/bin/python benchmarks/stem_probe.py RUN_DIR [accuracy|timing|both]

``accuracy`` (chapter 5 must have run in RUN_DIR): the "middle" encoder and context of the tutorial space, without a
stem, with each stem width of the space (3x3, time stride 1), with a stride-2 stem, and the space's largest
architecture, each trained from scratch with the baselines' recipe (:class:`ersam_lib.training.fit.FitConfig` at
``tutorial``: 5 epochs on 6,000 mixtures), beside the MobileNetV2-style net as chapter 5 trained it. Printed per row:
MMACs, parameters, energy per segment (chapter 5's calibrated figures: predicted by the ExecuTorch cost model for the
architectures of the space, measured for the baseline, as chapter 5 uses them), validation and test accuracy,
training seconds. One training seed
per row: differences under about 2 points are within run-to-run noise.

``timing``: seconds per supernet training step (sandwich of four subnets, batch 64, 2 threads) for the 1-D space and
for stems of several forms, including the inverted-residual form MobileNetV2 uses, which this script measured
before the stem took its plain-convolution form (the 1x1 Conv2d over a long, narrow map is slow to train on a CPU).
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ersam_lib.core.io import read_json
from ersam_lib.core.repro import seed_everything
from ersam_lib.experiments.search import run_search_setup
from ersam_lib.measure.complexity import count_params
from ersam_lib.measure.data import subset
from ersam_lib.measure.evaluation import eval_loader, evaluate
from ersam_lib.models.space import Arch, SearchSpace, StageArch, StageSpace, build_model
from ersam_lib.models.supernet import Supernet
from ersam_lib.training.fit import FitConfig, train_classifier

MIDDLE_ENC = (StageArch(32, 5, 2, 1), StageArch(48, 5, 2, 1))
MIDDLE_CTX = (StageArch(64, 5, 1, 1, 2), StageArch(64, 5, 1, 1, 2))


def accuracy(run_dir: Path) -> pd.DataFrame:
    run = run_search_setup(run_dir, runtime="executorch", cache=False)
    data, space, cfg = run.data, run.space, FitConfig.for_scale("tutorial")
    archs = {"middle, no stem": Arch(MIDDLE_ENC, MIDDLE_CTX, "none")}
    for w in space.stem.widths:
        archs[f"middle, stem {w}"] = Arch(MIDDLE_ENC, MIDDLE_CTX, "none", StageArch(w, 3, 1, 1))
    archs[f"middle, stem {max(space.stem.widths)} stride 2"] = Arch(MIDDLE_ENC, MIDDLE_CTX, "none",
                                                                    StageArch(max(space.stem.widths), 3, 2, 1))
    archs["largest of the space"] = space.largest()
    mnv2 = read_json(run_dir / "search" / "baselines" / "mobilenetv2.json")
    cost = pd.read_csv(run_dir / "search" / "frontier.csv").set_index("name").loc["mobilenetv2"]
    rows = [{"model": "MobileNetV2-style baseline", "MMACs": cost["macs"] / 1e6, "params": mnv2["params"],
             "energy_mj": cost["energy_mj"], "val_acc": mnv2["val_acc"], "test_acc": mnv2["test_acc"],
             "train_s": mnv2["train_s"]}]
    for name, arch in archs.items():
        seed_everything(cfg.seed)  # the space prices and builds a stemless architecture as well
        model = build_model(arch, data.n_features, data.n_classes, space.attn_dim)
        t0 = time.perf_counter()
        fit = train_classifier(model, subset(data.train, cfg.max_train_samples, cfg.seed), data.val, cfg, "cpu")
        test = evaluate(model, eval_loader(data.test, 128))
        energy = run.objectives.cost(arch)["energy_mj"]
        rows.append({"model": f"{name}: {arch.describe()}", "MMACs": space.macs(arch) / 1e6,
                     "params": count_params(model), "energy_mj": energy, "val_acc": fit.best_val_acc,
                     "test_acc": test["acc"], "train_s": time.perf_counter() - t0})
        print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


class _InvertedResidualStem(nn.Module):
    """The stem's first form (measured here only): 3x3 conv, then a 2-D inverted residual (1x1, 3x3 dw, 1x1)."""

    def __init__(self, width: int, expand: int):
        super().__init__()
        h = width * expand
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, (2, 1), 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, h, 3, (2, 1), 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, width, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.unsqueeze(1)).flatten(1, 2)


def timing(steps: int = 6) -> pd.DataFrame:
    torch.set_num_threads(2)
    base = SearchSpace.for_scale("tutorial", 40, 11, n_frames=251)
    x, y = torch.randn(64, 40, 251), torch.randint(0, 11, (64,))
    rows = []
    for name, stem in (("1-D (no stem)", None), ("tutorial stem", base.stem),
                       ("stem widths 8, 16, depth 1-2", StageSpace((8, 16), (3,), (1, 2), (1, 2)))):
        sp = dataclasses.replace(base, stem=stem)
        net = Supernet(sp).train()
        opt, rng = torch.optim.AdamW(net.parameters()), random.Random(0)

        def step() -> None:
            for a in (sp.largest(), sp.smallest(), sp.sample(rng), sp.sample(rng)):
                net.set_active_subnet(a)
                nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad()

        rows.append({"supernet": name, "largest_MMACs": sp.macs(sp.largest()) / 1e6,
                     "s_per_step": _seconds(step, steps)})
        print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False), flush=True)
    for name, stem in (("3x3 conv stem alone, width 8", build_model(
            Arch(MIDDLE_ENC, MIDDLE_CTX, "none", StageArch(8, 3, 1, 1)), 40, 11).stem),
                       ("inverted-residual stem alone, width 8, expand 3", _InvertedResidualStem(8, 3))):
        opt = torch.optim.SGD(stem.parameters(), 0.01)

        def step() -> None:
            stem(x).sum().backward()
            opt.step()
            opt.zero_grad()

        rows.append({"supernet": name, "largest_MMACs": float("nan"), "s_per_step": _seconds(step, steps)})
        print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def _seconds(step: Callable[[], None], n: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main() -> None:
    run_dir = Path(sys.argv[1])
    what = sys.argv[2] if len(sys.argv) > 2 else "both"
    if what not in ("accuracy", "timing", "both"):
        raise SystemExit(f"usage: stem_probe.py RUN_DIR [accuracy|timing|both], got {what!r}")
    if what in ("timing", "both"):
        print(timing().round(3).to_string(index=False))
    if what in ("accuracy", "both"):
        print(accuracy(run_dir).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
