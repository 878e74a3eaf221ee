"""Chapter 4's ablation at a larger training budget than the tutorial's CPU run: does ERSAM's claim hold there?

Meant for a GPU machine (training goes to the GPU when there is one); runs on the CPU too, slowly. Example:

    python benchmarks/ablation_budget.py --run-dir runs/budget --rule runs/tutorial/profiling/rule.json \\
        --epochs 30 --max-train-samples 0 --variants none,full,0.8,0.9 --csv budget.csv

Builds chapter 1's tutorial data (tts source) in RUN_DIR and trains chapter 3's teacher there when they are
missing (``--teacher-from`` copies a trained ``teacher/`` folder instead), takes chapter 2's cost rule from
``--rule`` (the search space depends on it), then trains and scores the variants one at a time with
:func:`ersam_lib.experiments.ablation.train_variant`. After each variant it prints the table so far and appends the row
to ``--csv`` (atomically); variants already in that CSV are skipped, so a run split over several sessions adds up.
At the end it prints :func:`ersam_lib.experiments.ablation.claim_check` for the selective variants.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from data_prep import DataConfig, build
from ersam_lib.core.io import atomic_path
from ersam_lib.core.repro import pick_device, seed_everything
from ersam_lib.core.rundir import run_file
from ersam_lib.experiments.ablation import claim_check, train_variant, variant_name
from ersam_lib.measure.data import load_feature_data
from ersam_lib.models.teacher import TeacherConfig
from ersam_lib.training.distill import DistillConfig
from ersam_lib.training.fit import fit_teacher
from ersam_lib.training.train import TrainConfig

COLS = ["variant", "epochs", "acc_smallest", "acc_middle", "acc_largest", "query_rate", "wall_s"]


def parse_variants(text: str, kind: str) -> list[DistillConfig]:
    """``none,full,0.8`` -> the distillation configs (a number is a selective τ)."""
    out = []
    for v in text.split(","):
        v = v.strip()
        out.append(DistillConfig(mode=v) if v in ("none", "full")  # type: ignore[arg-type]
                   else DistillConfig(mode="selective", tau=float(v), kind=kind))  # type: ignore[arg-type]
    return out


def prepare(run_dir: Path, args: argparse.Namespace) -> None:
    """Data, cost rule and teacher in ``run_dir``, each made only when missing."""
    if not run_file(run_dir, "dataset").exists():
        t0 = time.perf_counter()
        build(DataConfig.for_scale("tutorial", seed=args.seed,
                                   **({"workers": args.workers} if args.workers else {})), run_dir)
        print(f"data built in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.rule and not run_file(run_dir, "rule").exists():
        run_file(run_dir, "rule").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.rule, run_file(run_dir, "rule"))
    if args.teacher_from and not run_file(run_dir, "teacher_info").exists():
        shutil.copytree(args.teacher_from, run_file(run_dir, "teacher_info").parent, dirs_exist_ok=True)
    if not run_file(run_dir, "teacher_info").exists():
        cfg = TeacherConfig.for_scale("tutorial", seed=args.seed,
                                      **({"epochs": args.teacher_epochs} if args.teacher_epochs else {}))
        rep = fit_teacher(run_dir, cfg)
        print(f"teacher {rep['kind']}: val {rep['val_acc']:.3f} test {rep['test_acc']:.3f} "
              f"in {rep['wall_s']:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--csv", type=Path, required=True, help="results table (appended to; finished variants skipped)")
    p.add_argument("--rule", help="chapter 2's profiling/rule.json (else the space is unfiltered)")
    p.add_argument("--teacher-from", help="a trained RUN_DIR/teacher folder to reuse")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-train-samples", type=int, default=0, help="0: the whole training split")
    p.add_argument("--variants", default="none,full,0.6,0.8,0.9")
    p.add_argument("--uncertainty", default="entropy", choices=["entropy", "margin"])
    p.add_argument("--seed", type=int, default=0, help="data and teacher seed")
    p.add_argument("--train-seed", type=int, default=None, help="supernet training seed (default: --seed)")
    p.add_argument("--workers", type=int, default=None, help="processes for the data build")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    seed_everything(args.seed, args.threads)
    print(f"device: {pick_device()}; torch {torch.__version__}", flush=True)
    prepare(args.run_dir, args)
    data = load_feature_data(args.run_dir)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    base = TrainConfig.for_scale("tutorial", seed=train_seed, epochs=args.epochs,
                                 max_train_samples=args.max_train_samples or None)
    done = pd.read_csv(args.csv) if args.csv.exists() else pd.DataFrame(columns=["variant"])
    suffix = f"-seed{train_seed}" if train_seed != args.seed else ""  # its own checkpoint folder per seed
    for d in parse_variants(args.variants, args.uncertainty):
        name = variant_name(d) + suffix
        if name in set(done["variant"]):
            continue
        row = train_variant(args.run_dir, "tutorial", replace(base, distill=d), name=name, data=data)
        row.pop("val_predictions", None)  # per-window predictions: chapter 4's paired tests, not this table
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(args.csv) as tmp:
            done.to_csv(tmp, index=False)
        print(done[[c for c in COLS if c in done]].round(3).to_string(index=False), flush=True)
    done = done[done["variant"].str.endswith(suffix)].assign(variant=lambda t: t["variant"].str.removesuffix(suffix))
    if "full" in set(done["variant"]) and (done["mode"] == "selective").any():
        print(claim_check(done).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
