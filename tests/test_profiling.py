"""Chapter 2's pipeline on a deterministic fake device: operator grid, the rule, cost model, validation."""

import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ersam_lib.experiments.profiling import (OperatorGrid, ProfilingConfig, build_cost_model, call_trace,
                                             operator_cases, profile_operators, random_conv_net, summarize_validation,
                                             validate)
from ersam_lib.measure.costmodel import trace_layers
from ersam_lib.measure.costrule import CostRule
from ersam_lib.measure.devices import Device, LatencyStats, PowerModel
from ersam_lib.measure.export import TimingConfig

torch.set_num_threads(1)


class FakeDevice(Device):
    """Latency = 0.005 ms per layer + 1 ms per MMAC, and a model adds 0.02 ms of glue: a known truth."""

    name = "fake"

    def __init__(self):
        self.power = PowerModel(active_mw_per_core=1000.0, source="test")

    def measure(self, module, input_shape):
        recs = trace_layers(module, input_shape)
        ms = sum(0.005 + r.macs * 1e-6 for r in recs) + (0.02 if len(recs) > 1 else 0.0)
        return LatencyStats.from_samples([ms, ms * 1.01, ms * 0.99], {"threads": 1})


def test_config_for_scale():
    smoke, tut = ProfilingConfig.for_scale("smoke"), ProfilingConfig.for_scale("tutorial")
    assert tut.n_heldout_archs >= 50 and smoke.n_heldout_archs < tut.n_heldout_archs
    assert tut.max_op_ms == pytest.approx(10.0) and tut.input_shape == (1, 40, 251)  # chapter 1: 40 mels, 20-ms hop
    assert ProfilingConfig.for_scale("smoke", n_features=64).n_features == 64
    assert TimingConfig.for_scale("tutorial").repeats >= 20
    with pytest.raises(ValueError, match="SCALE"):
        ProfilingConfig.for_scale("huge")


def test_operator_cases_cover_every_family():
    grid = OperatorGrid.for_scale("smoke")
    cases = operator_cases(grid)
    assert {c["op"] for c in cases} == {"conv1d", "conv1d_dw", "conv1d_pw", "lstm", "gru", "attention", "linear"}
    n_conv = sum(c["op"] == "conv1d" for c in cases)
    assert n_conv == len(grid.channels) * len(grid.kernels) * len(grid.strides) * len(grid.seq_lens)
    for c in cases:  # every module runs on its input shape
        with torch.inference_mode():
            c["module"](torch.zeros(*c["input_shape"]))


def test_profile_operators_table():
    df = profile_operators(FakeDevice(), OperatorGrid.for_scale("smoke"))
    assert {"op", "channels", "kernel", "seq_len", "key", "macs", "median", "var", "ns_per_mac"} <= set(df.columns)
    conv = df[df.op == "conv1d"].iloc[0]
    assert conv["median"] == pytest.approx(0.005 + conv["macs"] * 1e-6)


def _power_law_grid(b=(-18.0, 2.0, 1.0, 1.0)) -> pd.DataFrame:
    rows = [dict(op="conv1d", stride=1, channels=c, kernel=k, seq_len=t,
                 median=float(np.exp(b[0]) * c ** b[1] * k ** b[2] * t ** b[3]))
            for c in (16, 64, 256) for k in (3, 9, 25) for t in (100, 500, 1000)]
    return pd.DataFrame(rows)


def test_rule_fits_the_power_law_and_forbids_the_costly_corner(tmp_path):
    rule = CostRule.fit(_power_law_grid(), max_op_ms=10.0, device="fake")
    assert rule.coef == pytest.approx([-18.0, 2.0, 1.0, 1.0], abs=1e-6) and rule.r2 == pytest.approx(1.0)
    assert rule.allows(256, 3, 100) and rule.allows(16, 25, 1000)  # each large alone is fine
    assert not rule.allows(256, 25, 1000)  # all three large together: blown budget
    rule.save(tmp_path / "rule.json")
    assert CostRule.load(tmp_path / "rule.json") == rule
    with pytest.raises(ValueError, match=">= 1"):
        rule.allows(0, 3, 100)
    with pytest.raises(ValueError, match=">= 4"):
        CostRule.fit(_power_law_grid().head(2), 10.0)


def test_random_conv_net_runs_and_varies():
    rng = random.Random(0)
    nets = [random_conv_net(rng, 40, 11) for _ in range(8)]
    with torch.inference_mode():
        outs = [n.eval()(torch.randn(1, 40, 100)) for n in nets]
    assert all(o.shape == (1, 11) for o in outs)
    assert len({repr(n) for n in nets}) == 8


def test_build_and_validate_recover_the_fake_truth():
    rng = random.Random(1)
    shape = (1, 40, 100)
    make = lambda n, tag: [(f"{tag}{i}", random_conv_net(rng, 40, 11), shape) for i in range(n)]  # noqa: E731
    train, held = make(12, "t"), make(6, "h")
    dev = FakeDevice()
    cm, table = build_cost_model(dev, train, layer_sources=held)
    assert len(table) == 12 and (table["measured_ms"] > table["lut_ms"]).all()
    df = validate(cm, held, dev)
    s = summarize_validation(df)
    assert s["n"] == 6 and s["lut_mape"] > 0  # the LUT sum misses the glue ...
    assert s["mape"] < s["lut_mape"] and s["spearman"] > 0.8  # ... the correction learns it
    assert (df["measured_energy_mj"] == df["measured_ms"] * 1000.0 / 1000.0).all()
    with pytest.raises(ValueError, match=">= 3"):
        summarize_validation(df.head(2))
    assert "repeat_within10" not in s  # one round: nothing to say about the measurement's repeatability
    twice = validate(cm, held, dev, rounds=2)
    assert (twice["round1_ms"] == twice["round2_ms"]).all()  # the fake device repeats itself exactly
    s2 = summarize_validation(twice)
    assert s2["repeat_within10"] == 1.0 and s2["repeat_spearman"] == pytest.approx(1.0)


def test_fit_and_validation_measured_in_one_session_cancel_host_drift():
    from ersam_lib.experiments.profiling import build_and_validate, measure_models

    class Drifting(FakeDevice):
        slow = False  # a host 20 % slower in a later measuring session (another tenant, a warmer CPU)

        def measure(self, module, input_shape):
            s = super().measure(module, input_shape)
            return LatencyStats.from_samples([s.median * 1.2] * 3) if self.slow else s

    rng = random.Random(3)
    shape = (1, 40, 100)
    train = [(f"t{i}", random_conv_net(rng, 40, 11), shape) for i in range(12)]
    held = [(f"h{i}", random_conv_net(rng, 40, 11), shape) for i in range(6)]
    dev = Drifting()
    cm, _ = build_cost_model(dev, train, layer_sources=held)
    dev.slow = True
    apart = validate(cm, held, dev)  # held-out measured in the slower session: the drift reads as a -17 % bias
    assert apart["rel_err"].mean() == pytest.approx(1 / 1.2 - 1, abs=0.03)
    cm1, table, together = build_and_validate(dev, train, held, layer_sources=held)  # both sets in the same rounds
    assert len(table) == 12 and together["name"].tolist() == [n for n, _, _ in held]
    assert abs(together["rel_err"].mean()) < 0.03
    stats = measure_models(train + held, dev)  # what build_and_validate does: the stats given are the ones used
    _, given = build_cost_model(dev, train, layer_sources=held, measured=stats[:12])
    assert given["measured_ms"].tolist() == [s.median for s in stats[:12]]
    assert validate(cm1, held, dev, stats=stats[12:])["measured_ms"].tolist() == [s.median for s in stats[12:]]
    with pytest.raises(ValueError, match="6 models"):
        validate(cm1, held, dev, stats=stats[:5])


def test_call_trace_times_each_call():
    t = call_trace(nn.Conv1d(4, 4, 3), (1, 4, 20), n_calls=5)
    assert len(t) == 5 and all(x > 0 for x in t)


def test_measure_models_pools_rounds():
    from ersam_lib.experiments.profiling import measure_models

    class Drifting(FakeDevice):
        calls = 0

        def measure(self, module, input_shape):
            Drifting.calls += 1
            ms = 100.0 if Drifting.calls == 2 else 1.0  # one round hit by a burst of load
            return LatencyStats.from_samples([ms] * 4)

    [s] = measure_models([("m", nn.Linear(2, 2), (1, 2))], Drifting(), rounds=3)
    assert s.count == 12 and s.median == 1.0 and s.mean == pytest.approx(34.0) and s.metadata["rounds"] == 3
    with pytest.raises(ValueError, match="rounds"):
        measure_models([], Drifting(), rounds=0)


def test_space_models_are_distinct_and_disjoint():
    from ersam_lib.experiments.profiling import sample_space_models
    from ersam_lib.models.space import SearchSpace

    space = SearchSpace.for_scale("smoke", n_features=16, n_classes=3, n_frames=50)
    rng = random.Random(0)
    a = sample_space_models(space, 4, rng, "t")
    b = sample_space_models(space, 3, rng, "h", exclude=a)
    ids = [n.rsplit("-", 1)[-1] for n, _, _ in a + b]
    assert len(set(ids)) == 7 and all(shape == (1, 16, 50) for _, _, shape in a + b)


def test_phone_like_device_power_comes_from_measured_energy():
    class Phone(FakeDevice):
        def __init__(self):
            self.power = None

        def measure(self, module, input_shape):
            s = super().measure(module, input_shape)
            s.energy_mj = s.median * 0.5  # 500 mW while running
            return s

    rng = random.Random(2)
    train = [(f"t{i}", random_conv_net(rng, 8, 3), (1, 8, 30)) for i in range(4)]
    cm, _ = build_cost_model(Phone(), train)
    assert cm.power_mw == pytest.approx(500.0) and cm.power_source.startswith("measured")
    grid = profile_operators(Phone(), OperatorGrid(channels=(4,), kernels=(3,), seq_lens=(10,), strides=(1,),
                                                   rnn_hidden=(4,), attn_dims=(32,), linear_dims=(4,)))
    assert (grid["energy_mj"] == grid["median"] * 0.5).all()


def test_chapter_2_profiles_the_input_of_the_runs_own_features(tmp_path):
    """Issue 31: the input shape and class count come from the run's features, not from the scale's defaults (a
    run built with another front end or K is profiled at its own shape)."""
    from data_prep import DataConfig, FeatureConfig, build

    build(DataConfig.tiny(features=FeatureConfig(n_mels=24, hop_length=800)), tmp_path)
    cfg = ProfilingConfig.for_run(tmp_path, "smoke")
    assert cfg.input_shape == (1, 24, 1 + 80_000 // 800) and cfg.n_classes == 3  # the tiny set: K = 2
    assert cfg.n_train_archs == ProfilingConfig.for_scale("smoke").n_train_archs  # the scale's sizes stay
