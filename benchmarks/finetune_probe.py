"""Chapter 5's chosen finalists fine-tuned with other recipes: does a longer fine-tune change the dominance verdicts?

Run:  .venv/bin/python benchmarks/finetune_probe.py runs/tutorial '[[2, 6000], [5, 6000], [5, null]]'
For each searched model chapter 5 saved in ``RUN_DIR/search/models/`` (the budget pick and the most accurate), and
each ``[finetune_epochs, max_train_samples]`` pair (``null``: the whole training split), extract it from the
supernet, fine-tune it with :func:`ersam_lib.training.fit.finetune_subnet` (the chapter's own code path and seed) and
print validation (inherited and fine-tuned), test and ``real_test`` accuracy and the wall time. ``[2, 6000]`` is the
tutorial's recipe and reproduces the chapter's figures; the baselines train 5 epochs on 6,000 mixtures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from ersam_lib.core.io import read_json
from ersam_lib.core.repro import seed_everything
from ersam_lib.core.rundir import run_file
from ersam_lib.experiments.frontier import load_chosen
from ersam_lib.experiments.search import run_search_setup
from ersam_lib.models.space import Arch
from ersam_lib.training.fit import FitConfig, finetune_subnet


def main() -> None:
    run_dir = Path(sys.argv[1])
    recipes = [dict(finetune_epochs=e, max_train_samples=m) for e, m in json.loads(sys.argv[2])]
    seed_everything(0)
    run = run_search_setup(run_dir, runtime="executorch")
    chosen = read_json(run_file(run_dir, "chosen"))
    names = sorted({chosen[role] for role in ("budget", "most_accurate") if role in chosen})
    cards = {name: load_chosen(run_dir, name)[1].architecture["arch"] for name in names}
    rows = []
    for name, arch in cards.items():
        for recipe in recipes:
            seed_everything(0)
            t0 = time.perf_counter()
            _, rep = finetune_subnet(run.supernet, Arch.from_dict(arch), run.data,
                                     FitConfig.for_scale("tutorial", seed=0, **recipe))
            rows.append({"model": name, **recipe, "val_inherited": rep["val_acc_inherited"], "val": rep["val_acc"],
                         "test": rep["test_acc"], "real_test": rep.get("real_test_acc"),
                         "wall_s": time.perf_counter() - t0})
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
