"""Which training sources count real speakers best? Synthetic only, real only, or both (issue: real speech).

Builds chapter 1's tutorial data three times, identical except for ``train_sources`` (the real evaluation splits do
not depend on it, so all three are scored on the same real mixtures), trains the largest architecture of chapter
4's tutorial space alone on each with chapter 3's recipe, and prints validation, synthetic test and real test
accuracy and MAE. Writes the table to ``--csv`` (atomically, one row per source choice; finished rows are skipped,
so a run split over sessions adds up). Example::

    python benchmarks/train_sources.py --work /tmp/sources --csv ersam_lib/recorded/train_sources_tutorial.csv

The largest subnet is the model whose sim-to-real gap the issue bounds; it trains in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from data_prep import DataConfig, build
from ersam_lib.core.io import atomic_path
from ersam_lib.measure.complexity import count_params
from ersam_lib.measure.data import load_feature_data, subset
from ersam_lib.measure.evaluation import eval_loader, evaluate
from ersam_lib.models.space import SearchSpace, build_model
from ersam_lib.models.teacher import TeacherConfig
from ersam_lib.training.fit import train_classifier

CHOICES = {"synthetic": ("tts",), "real": ("librimini",), "both": ("tts", "librimini")}


def one(work: Path, name: str, seed: int, epochs: int | None, max_train: int | None) -> dict:
    run_dir = work / name
    t0 = time.perf_counter()
    report = build(DataConfig.for_scale("tutorial", seed=seed, train_sources=CHOICES[name]), run_dir)
    build_s = time.perf_counter() - t0
    data = load_feature_data(run_dir)
    space = SearchSpace.for_scale("tutorial", data.n_features, data.n_classes, n_frames=data.n_frames)
    cfg = TeacherConfig.for_scale("tutorial", seed=seed, **({"epochs": epochs} if epochs else {}))
    torch.manual_seed(seed)
    model = build_model(space.largest(), data.n_features, data.n_classes, space.attn_dim)
    fit = train_classifier(model, subset(data.train, max_train, seed), data.val, cfg, "cpu")
    row = {"train_sources": name, "n_train": len(data.train), "params": count_params(model), "epochs": cfg.epochs,
           "val_acc": fit.best_val_acc, "build_s": build_s, "train_s": fit.wall_s,
           "mixtures": report.n_mixtures}
    for split, ds in data.splits.items():
        if split in ("train", "val"):
            continue
        r = evaluate(model, eval_loader(ds))
        row |= {f"{split}_acc": r["acc"], f"{split}_mae": r["mae"]}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the three run folders")
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--choices", default="both,synthetic,real")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: chapter 3's tutorial recipe")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    done = pd.read_csv(args.csv) if args.csv.exists() else pd.DataFrame(columns=["train_sources"])
    for name in args.choices.split(","):
        if name in set(done["train_sources"]):
            continue
        row = one(args.work, name, args.seed, args.epochs, args.max_train)
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(args.csv) as tmp:
            done.to_csv(tmp, index=False)
        print(done.round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
