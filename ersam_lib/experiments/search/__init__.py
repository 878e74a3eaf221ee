"""Chapter 5: searching the trained supernet under energy budgets, and comparing search strategies honestly.

Three parts, as in Archai (objectives cached by architecture, a kept history, the Pareto frontier), one module each:

- :mod:`.objectives`: :class:`Objectives` scores one architecture: an *expensive* accuracy function (in the book: the
  supernet's inherited accuracy after BN recalibration on the validation split) and a *cheap* cost function
  (chapter 2's cost model, :func:`predicted_costs`), each cached by ``arch.arch_id`` and optionally kept in a JSON
  file so that a re-run of the chapter reuses every evaluation; :mod:`.setup` builds them for a run folder
  (:func:`run_search_setup`);
- :mod:`.reward` (Speckhard et al.'s :class:`Reward`) and :mod:`.budget` (:class:`SearchBudget`: how much a search
  may evaluate, the hard constraint, the strategies' settings);
- :mod:`.strategies`: one module per strategy and one registry (:data:`STRATEGIES`); :func:`search` runs one for one
  seed and returns a :class:`History` (:mod:`.history`), whose :func:`curves` over several runs compare strategies
  by the hypervolume of the (error, energy) front and the best reward against the number of evaluations, and
  :func:`against_random` judges each strategy's final hypervolume against random search's over the seeds (Welch).

Counting is the same for all: an *evaluation* is a distinct architecture whose accuracy was asked for within that
run (whether the cache already held it or not). An architecture the cost rule forbids or that breaks the hard
budget (``max_energy_mj``/``max_latency_ms``) is rejected from its cheap cost, never scored, never counted and
never returned; Optuna is told such a trial was pruned (GPSampler, which ignores pruned trials, is told the run's
worst fitness so far instead). A repeated proposal is answered from the run's own
results and not counted again. Each run stops after ``n_evals`` evaluations, or earlier, with the reason in
``History.meta["stopped"]``, when ``max_proposals x n_evals`` proposals yielded no more new feasible architectures.

This package's names are its modules' public ones, importable from here
(``from ersam_lib.experiments.search import search``).
"""

from .budget import SearchBudget
from .history import History, against_random, curves, reference_point, summarize_curves
from .objectives import (REQUIRED_COSTS, AccuracyFn, CostFn, Objectives, costs_from_estimate, predicted_costs,
                         static_model, synthetic_objectives)
from .reward import Reward
from .setup import RunSearch, run_search_setup
from .strategies import STRATEGIES, Strategy, fitness_of, search
from .strategies.optuna_samplers import arch_from_trial

__all__ = [
    "REQUIRED_COSTS", "STRATEGIES", "AccuracyFn", "CostFn", "History", "Objectives", "Reward", "RunSearch",
    "SearchBudget", "Strategy", "against_random", "arch_from_trial", "costs_from_estimate", "curves", "fitness_of", "predicted_costs",
    "reference_point", "run_search_setup", "search", "static_model", "summarize_curves", "synthetic_objectives",
]
