"""Optuna's samplers on the search space (chapter 5): TPE and GP maximise one fitness, NSGA-II the (error, energy)
front. The space's choice lists become categorical parameters."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from ....models.space import Arch, SearchSpace, StageArch, StageSpace
from ..budget import SearchBudget
from .base import Run

__all__ = ["arch_from_trial", "quiet_optuna", "run"]


def _stage_params(trial: Any, name: str, sp: StageSpace) -> StageArch:
    def pick(what: str, choices: tuple[int, ...]) -> int:
        return choices[0] if len(choices) == 1 else int(trial.suggest_categorical(f"{name}_{what}", list(choices)))

    return StageArch(pick("width", sp.widths), pick("kernel", sp.kernels), pick("stride", sp.strides),
                     pick("depth", sp.depths), pick("expand", sp.expands))


def arch_from_trial(trial: Any, space: SearchSpace) -> Arch:
    """The architecture an Optuna trial suggests: one categorical parameter per choice list with 2+ options
    (``stem_width``, ``enc0_width``, ``ctx1_expand``, ``mixer``, ...). It may be one the cost rule forbids."""
    stem = None if space.stem is None else _stage_params(trial, "stem", space.stem)
    enc = tuple(_stage_params(trial, f"enc{i}", sp) for i, sp in enumerate(space.encoder))
    ctx = tuple(_stage_params(trial, f"ctx{i}", sp) for i, sp in enumerate(space.context))
    mixers = list(space.mixers)
    mixer = mixers[0] if len(mixers) == 1 else str(trial.suggest_categorical("mixer", mixers))
    return Arch(enc, ctx, mixer, stem)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-feature warnings, restoring the caller's level."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _sampler(strategy: str, b: SearchBudget, seed: int) -> Any:
    import optuna

    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(2, b.population), seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=b.n_startup, multivariate=True)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=b.n_startup, deterministic_objective=True)


def run(run: Run, seed: int) -> None:
    import optuna
    from optuna.trial import TrialState

    multi = run.strategy == "nsga2"  # NSGA-II minimises (error, energy); TPE and GP maximise the fitness
    study = optuna.create_study(directions=["minimize", "minimize"] if multi else ["maximize"],
                                sampler=_sampler(run.strategy, run.budget, seed))
    while not run.done:
        trial = study.ask()
        row = run.propose(arch_from_trial(trial, run.space))
        if run.strategy == "gp":
            # GPSampler reads only complete trials: a pruned one teaches it nothing, and it proposed the same
            # infeasible region 1189 times in 1200 (smoke space, 1.5 mJ budget). A rejected trial is therefore
            # told the worst fitness of this run so far (it is still no evaluation). Optuna's constraint GPs
            # (trial.set_constraint) did no better here and doubled the time per proposal.
            worst = min((run.fitness(r) for r in run.rows), default=0.0)
            study.tell(trial, run.fitness(row) if row is not None else worst)
        elif row is None:
            study.tell(trial, state=TrialState.PRUNED)  # forbidden or over budget: not an evaluation
        else:
            study.tell(trial, (row["error"], row["energy_mj"]) if multi else run.fitness(row))

