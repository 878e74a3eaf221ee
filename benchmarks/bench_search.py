"""The search's own cost (chapter 5): evaluations per second of each strategy with a near-free objective.

Runs every strategy of :mod:`ersam_lib.experiments.search` on the tutorial space with :func:`synthetic_objectives`
(accuracy and costs from the MAC count: microseconds), timing the objective calls separately, so the printed
``overhead`` is what the strategy itself spends per evaluation (sampling, mutation, Optuna's model, the bookkeeping).
Compare it with one supernet evaluation (BN recalibration + a validation pass) to see which one dominates a search::

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_search.py --n-evals 150 --gp-evals 60

Measured on the shared 2-core development machine (load average 5-9): random, ERSAM evolution and aging
evolution 1.4-4.6 ms per evaluation, NSGA-II 4-8 ms, TPE 16-25 ms, GP 3.8-7.3 s (a GP fit per proposal).

The hypervolume and best reward printed alongside come from the synthetic objective: they check that the runs
did something, they say nothing about real architectures.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from ersam_lib.experiments.search import (STRATEGIES, Objectives, SearchBudget, reference_point, search,
                                          synthetic_objectives)
from ersam_lib.models.space import SearchSpace


def timed_objectives(space: SearchSpace) -> tuple[Objectives, dict[str, float]]:
    """Fresh synthetic objectives whose accuracy and cost calls add their wall time to a counter."""
    syn = synthetic_objectives(space)
    spent = {"s": 0.0}

    def timed(fn):
        def wrapper(arch):
            t = time.perf_counter()
            try:
                return fn(arch)
            finally:
                spent["s"] += time.perf_counter() - t
        return wrapper

    return Objectives(timed(syn.accuracy_fn), timed(syn.cost_fn), tag=syn.tag), spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-evals", type=int, default=150, help="evaluations per run (all strategies but gp)")
    p.add_argument("--gp-evals", type=int, default=60, help="evaluations of the GP run (a GP fit per proposal)")
    p.add_argument("--max-energy", type=float, default=1.0, help="hard budget (mJ; the space spans ~0.04-2.5)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    space = SearchSpace.for_scale("tutorial", 40, 11, n_frames=250)
    rows = []
    for budget_mj in (None, args.max_energy):
        for strategy in args.strategies.split(","):
            n = args.gp_evals if strategy == "gp" else args.n_evals
            budget = SearchBudget.for_scale("tutorial", n_evals=n, max_energy_mj=budget_mj)
            obj, spent = timed_objectives(space)
            t = time.perf_counter()
            h = search(space, obj, budget, strategy, args.seed)
            wall = time.perf_counter() - t
            own = wall - spent["s"]
            rows.append({"strategy": strategy, "max_energy_mj": budget_mj, "evals": len(h),
                         "proposals": h.meta["proposals"], "rejected": h.meta["over_budget"] + h.meta["forbidden"],
                         "repeats": h.meta["repeats"], "wall_s": round(wall, 2),
                         "objective_s": round(spent["s"], 3), "overhead_ms_per_eval": round(1000 * own / len(h), 2),
                         "evals_per_s": round(len(h) / own, 1),
                         "hv_synthetic": round(h.hypervolume_curve(reference_point(space, obj, budget))[-1], 4),
                         "best_reward_synthetic": round(h.df["reward"].max(), 4)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
