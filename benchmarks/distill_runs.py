"""How far apart do full and no distillation land, run to run, at tutorial scale? (issue 14)

Run:  .venv/bin/python benchmarks/distill_runs.py SOURCE... --csv ersam_lib/recorded/distill_runs_tutorial.csv \
          [--space 1-D]

Each SOURCE is a complete run folder (its ``metrics/03.json``, ``metrics/04.json`` and ``summary.json``) or a
reference file recorded from one (``python -m ersam_lib compare --record``; older ones from git history:
``git show <commit>:ersam_lib/recorded/reference_tutorial.json > ref.json``), optionally prefixed ``NAME=``. One
row per source: the teacher's rounds of dynamic mixing, its and the largest subnet alone's validation accuracy
(chapter 3), chapter 4's accuracy of the smallest, middle and largest subnets with full and with no distillation,
the CPU instruction set the run's kernels used, and the search space (``--space``: ``2-D stem``, the default, for runs
of the space with chapter 4's 2-D stem; ``1-D`` for runs before it, which is what older rows without the column
were). Rows whose ``run`` is already in the CSV are replaced; the file is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from ersam_lib.app.compare import load_reference, make_reference
from ersam_lib.core.io import atomic_path

SIZES = ("smallest", "middle", "largest")


def row(source: str, space: str) -> dict[str, Any]:
    name, _, path_text = source.rpartition("=")
    path = Path(path_text)
    ref = make_reference(path) if path.is_dir() else load_reference(path)  # a run folder reads as its reference
    ch3, ch4 = ({k: e["value"] for k, e in ref["chapters"][ch].items()} for ch in ("03_teacher", "04_supernet"))
    recorded = ref.get("recorded", {})
    out: dict[str, Any] = {"run": name or path.name, "space": space,
                           "date": str(recorded.get("run_updated") or recorded.get("date", ""))[:10],
                           "cpu_capability": recorded.get("machine", {}).get("cpu_capability", "not recorded"),
                           # chapter 3 records its dynamic-mixing rounds from session 17 on; every tutorial run
                           # before that trained its teacher on the training split alone (R = 0)
                           "teacher_mix_rounds": ch3.get("teacher_mix_rounds", 0),
                           "teacher_val_acc": ch3["teacher_val_acc"],
                           "largest_alone_val_acc": ch3["largest_subnet_val_acc"]}
    for size in SIZES:
        full, none = ch4[f"acc_{size}.full"], ch4[f"acc_{size}.none"]
        out |= {f"{size}_full": full, f"{size}_none": none, f"{size}_full_minus_none": full - none}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", help="[NAME=]run folder or reference JSON")
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--space", default="2-D stem", choices=("2-D stem", "1-D"),
                   help="the space the runs searched (1-D: runs before chapter 4's 2-D stem)")
    args = p.parse_args()
    new = pd.DataFrame([row(s, args.space) for s in args.sources])
    old = pd.read_csv(args.csv) if args.csv.exists() else new.iloc[:0]
    if "space" not in old:  # rows recorded before the column existed are runs of the 1-D space
        old.insert(1, "space", "1-D")
    table = pd.concat([old[~old["run"].isin(new["run"])], new], ignore_index=True)
    with atomic_path(args.csv) as tmp:
        table.to_csv(tmp, index=False)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
