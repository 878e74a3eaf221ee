"""Does dynamic mixing make chapter 3's teacher clearly better than its students? (issue 14)

On a run folder where chapter 1 ran (``RUN_DIR/data``), trains chapter 3's tutorial teacher (the CRNN, 8 epochs)
with 0, 1, 3, ... extra rounds of fresh training mixtures (:mod:`data_prep.dynamic`: epoch ``e`` reads round
``e mod (rounds + 1)``, so every choice costs the same number of training steps) and prints validation, test and
real-speech accuracy, the rendering time of the rounds and the training time. Works in a scratch folder that links
``RUN_DIR/data`` (the rounds are built there once and shared by the candidates; ``RUN_DIR`` is not written). Writes
the table to ``--csv`` atomically, one row per candidate (finished rows are skipped). ``--mix-sources librimini``
draws the extra rounds from the real training speakers alone (column ``mix_sources``; ``all``: every training
source, chapter 3's recipe). Example::

    python benchmarks/teacher_mixing.py runs/tutorial --work /tmp/mixing --rounds 0,3,7 \
        --csv ersam_lib/recorded/teacher_mixing_tutorial.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from data_prep.dynamic import build_rounds
from ersam_lib.core.io import atomic_path
from ersam_lib.models.teacher import TeacherConfig
from ersam_lib.training.fit import fit_teacher


def label(mix_sources: tuple[str, ...] | None) -> str:
    """The ``mix_sources`` column: ``all`` for every training source (chapter 3's recipe)."""
    return "+".join(mix_sources) if mix_sources else "all"


def one(work: Path, rounds: int, seed: int, epochs: int | None, mix_sources: tuple[str, ...] | None) -> dict:
    t0 = time.perf_counter()
    markers = build_rounds(work, rounds, mix_sources=mix_sources)
    mix_s = time.perf_counter() - t0
    cfg = TeacherConfig.for_scale("tutorial", seed=seed, mix_rounds=rounds, mix_sources=mix_sources,
                                  **({"epochs": epochs} if epochs else {}))
    info = fit_teacher(work, cfg)
    row = {"mix_rounds": rounds, "mix_sources": label(mix_sources),
           "epochs": cfg.epochs, "distinct_mixtures": info["distinct_train_samples"],
           "val_acc": info["val_acc"], "best_epoch": info["best_epoch"], "test_acc": info["test_acc"],
           "test_mae": info["test_mae"], "mix_s": mix_s, "render_s_per_round": sum(m["render_s"] + m["recipes_s"]
                                                                                 for m in markers) / max(1, rounds),
           "train_s": info["wall_s"], "params": info["params"]}
    return row | {k: info[k] for k in info if k.startswith("real_")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run folder where chapter 1 ran")
    p.add_argument("--work", type=Path, required=True, help="scratch run folder (links RUN_DIR/data)")
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--rounds", default="0,3,7", help="comma-separated mix_rounds to try")
    p.add_argument("--epochs", type=int, default=None, help="default: chapter 3's tutorial recipe")
    p.add_argument("--mix-sources", default=None, help="comma-separated training sources of the extra rounds "
                                                       "(default: all of them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "data").exists():
        (args.work / "data").symlink_to((args.run_dir / "data").resolve(), target_is_directory=True)
    done = pd.read_csv(args.csv) if args.csv.exists() else pd.DataFrame(columns=["mix_rounds", "epochs"])
    if "mix_sources" not in done:  # rows recorded before the option drew from every training source
        done.insert(1, "mix_sources", "all")
    epochs = args.epochs or TeacherConfig.for_scale("tutorial").epochs
    mix_sources = tuple(args.mix_sources.split(",")) if args.mix_sources else None
    for rounds in (int(r) for r in args.rounds.split(",")):
        drawn_from = mix_sources if rounds else None  # round 0 is the training split whatever the sources
        if ((done["mix_rounds"] == rounds) & (done["epochs"] == epochs)
                & (done["mix_sources"] == label(drawn_from))).any():
            continue
        row = one(args.work, rounds, args.seed, args.epochs, drawn_from)
        done = pd.DataFrame([row]) if done.empty else pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(args.csv) as tmp:
            done.to_csv(tmp, index=False)
        print(done.round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
