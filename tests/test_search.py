"""Chapter 5's search library on a tiny space with cheap, deterministic synthetic objectives."""

from __future__ import annotations

import json
import random

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ersam_lib.experiments.search import (STRATEGIES, History, Objectives, Reward, SearchBudget, against_random,
                                          curves, fitness_of, predicted_costs, reference_point, search,
                                          summarize_curves, synthetic_objectives)
from ersam_lib.models.space import Arch, SearchSpace

matplotlib.use("Agg")

MAX_ENERGY = 0.8  # mJ; the synthetic space spans about 0.07..2.5 mJ, so this rejects a good share of proposals


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.for_scale("smoke", n_features=16, n_classes=3, n_frames=50)


def budget_for(strategy: str, **kw) -> SearchBudget:
    # GPSampler refits a Gaussian process per proposal (seconds each here): fewer evaluations for it
    n = dict(n_evals=7, n_startup=4) if strategy == "gp" else dict(n_evals=20)
    return SearchBudget.for_scale("smoke", **(n | kw))


@pytest.fixture(scope="module")
def runs(space: SearchSpace) -> dict:
    """Histories per (strategy, seed, repeat), each run on fresh objectives, computed once per module."""
    cache: dict = {}

    def get(strategy: str, seed: int = 0, repeat: int = 0) -> History:
        key = (strategy, seed, repeat)
        if key not in cache:
            cache[key] = search(space, synthetic_objectives(space), budget_for(strategy, max_energy_mj=MAX_ENERGY),
                                strategy, seed)
        return cache[key]

    return get  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- the reward
def test_reward_worked_example_90kb_needs_two_more_points_than_60kb() -> None:
    r = Reward()
    # Speckhard: with c = 0.02 / 30 kB above M0 = 60 kB, a 90 kB model must be 0.02 more accurate to tie
    assert r(0.70 + 0.02, 1.0, 90.0) == pytest.approx(r(0.70, 1.0, 60.0))
    assert r(0.70 + 0.019, 1.0, 90.0) < r(0.70, 1.0, 60.0)
    # and 0.75 mJ above E0 = 1.25 mJ costs two points too (b), 1.75 mJ with the milder b'
    assert r(0.72, 1.25 + 0.75, 50.0) == pytest.approx(r(0.70, 1.25, 50.0))
    assert Reward.b_prime()(0.72, 1.25 + 1.75, 50.0) == pytest.approx(Reward.b_prime()(0.70, 1.25, 50.0))
    # below both thresholds the reward is the accuracy
    assert r(0.7, 1.0, 59.0) == 0.7
    assert r(0.7, 1.25, 60.0) == 0.7


def test_reward_scaled_keeps_the_relative_trade_off_and_works_on_arrays() -> None:
    s = Reward.scaled(e0_mj=50.0, m0_kb=200.0)
    assert s(0.72, 50.0 + 0.6 * 50.0, 100.0) == pytest.approx(s(0.70, 50.0, 100.0))
    assert s(0.72, 10.0, 300.0) == pytest.approx(s(0.70, 10.0, 200.0))
    same = Reward.scaled(1.25, 60.0)  # at the paper's thresholds it is the paper's reward
    assert (same.b_per_mj, same.c_per_kb) == pytest.approx((Reward().b_per_mj, Reward().c_per_kb))
    assert Reward.scaled(1.25, 60.0, harsh=False).b_per_mj == pytest.approx(Reward.b_prime().b_per_mj)
    out = Reward()(np.array([0.7, 0.7]), np.array([1.0, 2.0]), np.array([60.0, 60.0]))
    assert out.shape == (2,) and out[0] > out[1]
    with pytest.raises(ValueError, match="c_per_kb"):
        Reward(c_per_kb=-1.0)


# --------------------------------------------------------------------------------------------- objectives
def _counting_objectives(space: SearchSpace, calls: list, cache_path=None, tag: str = "t") -> Objectives:
    syn = synthetic_objectives(space)

    def acc(arch: Arch) -> dict:
        calls.append(arch.arch_id)
        return syn.accuracy_fn(arch)

    return Objectives(acc, syn.cost_fn, cache_path, tag)


def test_objective_cache_hits_on_a_repeated_architecture(space: SearchSpace) -> None:
    calls: list = []
    obj = _counting_objectives(space, calls)
    arch = space.sample(random.Random(0))
    first = obj.evaluate(arch)
    again = obj.evaluate(Arch.from_json(arch.to_json()))  # an equal architecture, another object
    assert first == again and calls == [arch.arch_id]
    assert obj.counts == {"acc_hits": 1, "acc_misses": 1, "cost_hits": 1, "cost_misses": 1}
    assert set(first) >= {"acc", "mae", "latency_ms", "energy_mj", "memory_kb"}


def test_objective_cache_file_is_reused_and_tag_checked(space: SearchSpace, tmp_path) -> None:
    path = tmp_path / "objectives.json"
    calls: list = []
    obj = _counting_objectives(space, calls, path)
    archs = [space.sample(random.Random(i)) for i in range(3)]
    scores = [obj.evaluate(a) for a in archs]
    doc = json.loads(path.read_text())
    assert doc["tag"] == "t" and set(doc["accuracy"]) == {a.arch_id for a in archs}
    assert not list(tmp_path.glob(".objectives.json.*"))  # atomic: no temporary left behind
    calls2: list = []
    obj2 = _counting_objectives(space, calls2, path)
    assert [obj2.evaluate(a) for a in archs] == scores and calls2 == [] and len(obj2) == 3
    with pytest.raises(ValueError, match="tag"):
        _counting_objectives(space, [], path, tag="another supernet")


def test_objectives_name_missing_keys(space: SearchSpace) -> None:
    obj = Objectives(lambda a: {"acc": 0.5}, lambda a: {"energy_mj": 1.0, "latency_ms": 1.0, "memory_kb": 1.0})
    with pytest.raises(ValueError, match="mae"):
        obj.accuracy(space.smallest())


def test_hard_budget_is_decided_before_the_expensive_accuracy(space: SearchSpace) -> None:
    calls: list = []
    obj = _counting_objectives(space, calls)
    h = search(space, obj, budget_for("random", max_energy_mj=MAX_ENERGY), "random", seed=0)
    assert h.meta["over_budget"] > 0  # the budget did bite
    assert sorted(calls) == sorted(h.df["arch_id"])  # accuracy asked only for what was evaluated
    assert all(obj.cost(a)["energy_mj"] <= MAX_ENERGY for a in h.archs())


# --------------------------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_is_deterministic_under_a_seed(runs, strategy: str) -> None:
    a, b = runs(strategy, 0, 0), runs(strategy, 0, 1)
    pd.testing.assert_frame_equal(a.df, b.df)
    assert a.meta == b.meta
    if strategy != "gp":  # the GP's run is too short to be sure two seeds differ
        assert runs(strategy, 1, 0).df["arch_id"].tolist() != a.df["arch_id"].tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_returned_architectures_respect_the_budget_and_the_space(space: SearchSpace, runs, strategy: str) -> None:
    h = runs(strategy)
    n = budget_for(strategy).n_evals
    assert len(h) == n and h.meta["stopped"] == "n_evals"
    assert h.df["eval"].tolist() == list(range(n)) and h.df["arch_id"].is_unique
    assert (h.df["energy_mj"] <= MAX_ENERGY).all() and h.df["feasible"].all()
    assert all(space.contains(a) for a in h.archs())
    assert h.meta["proposals"] == n + h.meta["over_budget"] + h.meta["forbidden"] + h.meta["repeats"]
    if strategy == "gp":  # the GP was told about rejected trials (the run's worst fitness) and carried on
        assert h.meta["over_budget"] > 0
    assert SearchBudget.from_dict(h.meta["budget"]) == budget_for(strategy, max_energy_mj=MAX_ENERGY)


def test_latency_budget_is_respected(space: SearchSpace) -> None:
    h = search(space, synthetic_objectives(space), SearchBudget.for_scale("smoke", n_evals=15, max_latency_ms=0.5),
               "regularized_evolution", seed=3)
    assert len(h) == 15 and (h.df["latency_ms"] <= 0.5).all()


class _ForbidWideLongKernels:
    """A cost rule that forbids convolutions with 32+ channels and kernel 5+ (about 40 % of the smoke space)."""

    def allows(self, channels: int, kernel: int, seq_len: int) -> bool:
        return not (channels >= 32 and kernel >= 5)


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_optuna_strategies_never_return_what_the_rule_forbids(strategy: str) -> None:
    ruled = SearchSpace.for_scale("smoke", n_features=16, n_classes=3, n_frames=50, rule=_ForbidWideLongKernels())
    h = search(ruled, synthetic_objectives(ruled), SearchBudget.for_scale("smoke", n_evals=20), strategy, seed=0)
    assert h.meta["forbidden"] > 0  # Optuna proposed forbidden combinations and was told they were pruned
    assert len(h) == 20 and all(ruled.contains(a) for a in h.archs())


def test_evolution_maximises_accuracy_and_the_others_the_reward(space: SearchSpace, runs) -> None:
    assert runs("evolution").meta["fitness"] == "acc"
    assert runs("regularized_evolution").meta["fitness"] == "reward"
    assert runs("random").meta["fitness"] is None
    assert fitness_of(SearchBudget(fitness="acc"), "tpe") == "acc"
    assert fitness_of(SearchBudget(fitness="acc"), "nsga2") is None  # a front has no single fitness


def test_a_run_that_cannot_find_new_architectures_stops_and_says_so(space: SearchSpace) -> None:
    tiny = SearchBudget.for_scale("smoke", n_evals=10, max_energy_mj=0.09, max_proposals=5)  # almost nothing fits
    with pytest.warns(RuntimeWarning, match="stopped after"):
        h = search(space, synthetic_objectives(space), tiny, "random", seed=0)
    assert h.meta["stopped"] == "max_proposals" and len(h) < 10 and h.meta["proposals"] == 50


def test_bad_arguments_fail_clearly(space: SearchSpace) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        search(space, synthetic_objectives(space), SearchBudget(), "annealing")
    with pytest.raises(ValueError, match="parents"):
        SearchBudget(population=4, parents=5)
    with pytest.raises(ValueError, match="max_energy_mj"):
        SearchBudget(max_energy_mj=0.0)
    with pytest.raises(ValueError, match="SCALE"):
        SearchBudget.for_scale("huge")


def test_optuna_logging_level_is_restored(space: SearchSpace) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        search(space, synthetic_objectives(space), SearchBudget.for_scale("smoke", n_evals=3), "tpe", seed=0)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------------------------- history
def test_history_front_best_and_curves(runs) -> None:
    h = runs("nsga2")
    front = h.front()
    pts = h.df[["energy_mj", "error"]].to_numpy()
    for _, r in front.iterrows():  # nothing in the history dominates a front point
        assert not np.any((pts[:, 0] <= r["energy_mj"]) & (pts[:, 1] <= r["error"])
                          & ((pts[:, 0] < r["energy_mj"]) | (pts[:, 1] < r["error"])))
    assert front["energy_mj"].is_monotonic_increasing and front["error"].is_monotonic_decreasing
    assert h.best()["reward"] == h.df["reward"].max()
    assert h.best(column="acc")["acc"] == h.df["acc"].max()
    soft = Reward.b_prime()
    assert h.best(soft)["arch_id"] in set(h.df["arch_id"])
    ref = (1.0, MAX_ENERGY)
    hv = h.hypervolume_curve(ref)
    assert hv.shape == (len(h),) and np.all(np.diff(hv) >= 0) and hv[-1] > 0
    assert np.all(np.diff(h.best_reward_curve()) >= 0)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_history_save_load_round_trip(runs, tmp_path, suffix: str) -> None:
    h = runs("tpe")
    path = h.save(tmp_path / f"history{suffix}")
    back = History.load(path)
    pd.testing.assert_frame_equal(back.df, h.df, check_dtype=False)
    if suffix == ".json":
        assert back.meta == json.loads(json.dumps(h.meta))
    assert back.archs() == h.archs()
    with pytest.raises(ValueError, match=r"\.json or \.csv"):
        h.save(tmp_path / "history.txt")


def test_curves_summarise_strategies_over_seeds(space: SearchSpace) -> None:
    obj = synthetic_objectives(space)
    budget = SearchBudget.for_scale("smoke", n_evals=12, max_energy_mj=MAX_ENERGY)
    histories = [search(space, obj, budget, s, seed) for s in ("random", "regularized_evolution", "nsga2")
                 for seed in (0, 1, 2)]
    long = curves(histories, reference_point(space, obj, budget))
    table = summarize_curves(long)
    assert set(table["strategy"]) == {"random", "regularized_evolution", "nsga2"}
    # each strategy against random: Welch's test on the three seeds' final hypervolumes, the means from the table
    verdicts = against_random(long).set_index("strategy")
    final = table[table["n_evals"] == 12].set_index("strategy")["hv_mean"]
    assert set(verdicts.index) == {"regularized_evolution", "nsga2"} and (verdicts["n_seeds"] == 3).all()
    for s, r in verdicts.iterrows():
        assert r["hv_mean"] == pytest.approx(final[s]) and r["random_mean"] == pytest.approx(final["random"])
        assert r["diff_low"] <= r["diff"] <= r["diff_high"]
        assert (r["verdict"] == "not distinguishable at this scale") == (r["p"] >= 0.05)
    with pytest.raises(ValueError, match="no 'random' search"):
        against_random(long[long["strategy"] != "random"])
    assert (table["n_seeds"] == 3).all() and len(table) == 3 * 12
    assert (table["hv_min"] <= table["hv_mean"] + 1e-12).all() and (table["hv_mean"] <= table["hv_max"] + 1e-12).all()
    for _, g in table.groupby("strategy"):
        assert np.all(np.diff(g["hv_mean"]) >= -1e-12) and np.all(np.diff(g["reward_mean"]) >= -1e-12)
    assert reference_point(space, obj, budget) == (1.0, MAX_ENERGY)
    free = reference_point(space, obj, SearchBudget())
    assert free[1] == pytest.approx(1.1 * obj.cost(space.largest())["energy_mj"])
    assert curves([], (1.0, 1.0)).empty


def test_plots_draw(runs) -> None:
    from ersam_lib.experiments.search_plots import plot_best_reward, plot_frontier, plot_hypervolume

    hs = [runs("random"), runs("random", 1), runs("nsga2")]
    baselines = pd.DataFrame({"name": ["TC-ResNet8"], "energy_mj": [0.5], "error": [0.4]})
    fig = plot_frontier(hs, baselines, budget=MAX_ENERGY)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "TC-ResNet8" in labels
    summary = summarize_curves(curves(hs, (1.0, MAX_ENERGY)))
    assert len(plot_hypervolume(summary).axes[0].lines) == 2  # random, nsga2
    assert len(plot_best_reward(summary, spread="std").axes[0].lines) == 2


# --------------------------------------------------------------------------------------------- the book's adapters
def test_predicted_costs_use_chapter_2s_cost_model(space: SearchSpace) -> None:
    import torch

    from ersam_lib.measure.costmodel import CostModel, LatencyLUT

    lut = LatencyLUT(metadata={"device": "test"})
    for i, (fam, macs, ms) in enumerate([("conv1d", 1e4, 0.01), ("conv1d", 1e6, 0.5), ("linear", 1e3, 0.002),
                                         ("linear", 1e5, 0.05)]):
        key = f"k{i}"
        lut.entries[key] = {s: ms for s in ("count", "mean", "var", "median", "p90", "min")}
        lut.families[key], lut.macs[key] = fam, int(macs)
    cost_fn = predicted_costs(CostModel(lut, power_mw=4000.0, power_source="test"), space)
    state = torch.random.get_rng_state()
    small, large = cost_fn(space.smallest()), cost_fn(space.largest())
    assert torch.equal(torch.random.get_rng_state(), state)  # building the networks left torch's RNG alone
    assert small["energy_mj"] < large["energy_mj"] and small["memory_kb"] < large["memory_kb"]
    assert large["memory_kb_float"] == pytest.approx(4 * large["memory_kb"])
    assert large["energy_mj"] == pytest.approx(large["latency_ms"] * 4.0)  # ms x 4000 mW = uJ -> mJ
    assert large["peak_act_kb_int8"] == pytest.approx(large["peak_act_kb_float"] / 4)


def test_chapter_6_deploys_the_most_accurate_model_when_none_fit_the_budget(tmp_path) -> None:
    from ersam_lib.core.cards import Chosen

    both = Chosen("searched-1", "searched-3", ["tcresnet8"])
    assert both.pick("budget") == ("searched-1", "budget")
    assert both.pick("most_accurate") == ("searched-3", "most_accurate")
    assert both.names() == ["searched-1", "searched-3", "tcresnet8"]
    # a loaded host measured every finalist over the default budget: chapter 5 wrote no "budget" choice
    assert Chosen(None, "searched-3").pick("budget") == ("searched-3", "most_accurate")
    with pytest.raises(ValueError, match="MODEL must be one of"):
        both.pick("cheapest")
    with pytest.raises(ValueError, match="chose no searched model"):
        Chosen(None, None, ["tcresnet8"]).pick("budget")
    both.save(tmp_path)  # the hand-off round trip, as chapter 5 writes it and chapter 6 reads it
    assert Chosen.load(tmp_path) == both
    assert (tmp_path / "search" / "chosen.json").read_text().count("searched") == 2
