"""The cost model (chapter 2): LUT keying, layer tracing, MACs, the predictor on a toy table, persistence."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from ersam_lib.measure.costmodel import (CostModel, LatencyLUT, layer_key, layer_key_of, model_size_bytes, trace_layers)
from ersam_lib.measure.devices import LatencyStats

torch.set_num_threads(1)


def test_layer_key_depends_on_config_and_shape_not_weights():
    a, b = nn.Conv1d(16, 32, 9, stride=2, padding=4), nn.Conv1d(16, 32, 9, stride=2, padding=4)
    assert layer_key(a, (1, 16, 100)) == layer_key(b, (1, 16, 100))
    assert layer_key(a, (1, 16, 100)) == "Conv1d|cin=16|cout=32|k=9|s=2|p=4|d=1|g=1|bias=1|in=1x16x100"
    assert layer_key(a, (1, 16, 101)) != layer_key(a, (1, 16, 100))
    assert layer_key(nn.Conv1d(16, 32, 9, groups=16), (1, 16, 100)) != layer_key(b, (1, 16, 100))
    assert layer_key(nn.LSTM(8, 16, batch_first=True), (1, 10, 8)).startswith("LSTM|in=8|h=16|layers=1|bi=0|bf=1")
    assert layer_key_of(nn.Sequential(a), (1, 16, 100)) is None  # a composite has no layer key
    assert layer_key_of(nn.GRU(4, 4), (3, 1, 4)).startswith("GRU|")  # atomic layers do


class _TwoCalls(nn.Module):
    """Calls the same conv twice and an attention layer with need_weights=False."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = self.conv(self.conv(x)).transpose(1, 2)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.fc(h.mean(1))


def test_trace_records_each_call_with_macs():
    recs = trace_layers(_TwoCalls(), (2, 8, 20))
    assert [r.family for r in recs] == ["conv1d", "conv1d", "attention", "linear"]
    assert recs[0].key == recs[1].key  # same layer, same shape, twice the cost
    assert recs[0].macs == 2 * 8 * 20 * 8 * 3  # out elements x c_in x k
    assert recs[2].key.endswith("|nw=0|in=2x20x8")
    assert recs[2].macs == 2 * (4 * 20 * 8 * 8 + 2 * 20 * 20 * 8)
    assert recs[3].macs == 2 * 3 * 8
    lstm = trace_layers(nn.LSTM(4, 6, batch_first=True), (1, 10, 4))[0]
    assert lstm.macs == 10 * 4 * 6 * (4 + 6)


def test_the_space_attention_block_is_traced_as_one_operator_and_every_weight_is_seen():
    """The block's forward uses its layers' weights functionally: without ``cost_family`` the trace missed it."""
    import random

    from ersam_lib.models.space import SearchSpace, build_model

    space = SearchSpace.for_scale("tutorial", n_features=40, n_classes=5, n_frames=251)
    arch = dataclasses.replace(space.sample(random.Random(0)), mixer="attn")
    model = build_model(arch, 40, 5, space.attn_dim)
    recs = trace_layers(model, (1, 40, 251))
    assert sum(r.params for r in recs) == sum(p.numel() for p in model.parameters())
    [block] = [r for r in recs if r.family == "attention"]
    assert block.key.startswith(f"AttentionBlock|channels={block.in_shape[1]},dim={space.attn_dim}|")
    assert [block.macs] == [op.macs for op in space.operators(arch) if op.kind == "attn"]


def _stats(ms: float) -> LatencyStats:
    return LatencyStats.from_samples([ms, ms, ms])


def _toy_lut(model, shape, ms_per_mac=1e-5) -> LatencyLUT:
    lut = LatencyLUT(metadata={"device": "toy"})
    for rec in trace_layers(model, shape):
        lut.add(rec, _stats(0.01 + rec.macs * ms_per_mac))
    return lut


def test_predictor_sums_the_table_and_reports_memory_and_energy():
    model, shape = _TwoCalls(), (1, 8, 20)
    lut = _toy_lut(model, shape)
    cm = CostModel(lut, power_mw=2000.0, power_source="toy")
    expected = sum(0.01 + r.macs * 1e-5 for r in trace_layers(model, shape))
    est = cm.predict(model, shape)
    assert est.latency_ms == pytest.approx(expected) and est.lut_coverage == 1.0
    assert est.energy_mj == pytest.approx(expected * 2.0)  # ms x mW / 1000 = mJ
    assert est.avg_power_mw_12h == pytest.approx(est.energy_mj / 5.0)
    assert est.energy_12h_j == pytest.approx(est.avg_power_mw_12h * 43.2)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.size_bytes == model_size_bytes(model) > 4 * est.params
    assert est.peak_activation_bytes == max(r.in_bytes + r.out_bytes for r in trace_layers(model, shape))
    assert est.device == "toy" and est.n_layers == 4


def test_features_count_the_bytes_of_2d_maps_apart():
    """``act_bytes_2d``: what layers over (C, F, T) maps write (the 2-D stem's; a channels-last runtime converts
    their layout), part of ``act_bytes``; zero for a 1-D network."""
    one_d = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU())
    two_d = nn.Sequential(nn.Unflatten(1, (1, 4)), nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten(1, 2),
                          nn.Conv1d(12, 6, 3, padding=1))
    shape = (1, 4, 10)
    f1 = CostModel(_toy_lut(one_d, shape), 1000.0, "toy").features(one_d, shape)
    f2 = CostModel(_toy_lut(two_d, shape), 1000.0, "toy").features(two_d, shape)
    assert f1["act_bytes_2d"] == 0.0
    assert f2["act_bytes_2d"] == 4 * (3 * 4 * 10) * 2 + 4 * (12 * 10)  # conv2d and BN write 3x4x10, flatten reads them
    assert f2["act_bytes"] > f2["act_bytes_2d"]


def test_missing_layers_fall_back_to_the_family_fit():
    lut = LatencyLUT()
    for c in (4, 8, 16, 32):
        conv = nn.Conv1d(c, c, 3)
        lut.add(trace_layers(conv, (1, c, 50))[0], _stats(1e-4 * c * c))
    cm = CostModel(lut, 1000.0, "toy")
    new = nn.Conv1d(12, 12, 3)
    assert [r[0].key for r in cm.missing_layers(new, (1, 12, 50))] == [layer_key(new, (1, 12, 50))]
    est = cm.predict(new, (1, 12, 50))
    assert est.lut_coverage == 0.0
    assert est.latency_ms == pytest.approx(1e-4 * 144, rel=0.05)  # log-log fit interpolates the power law


def test_correction_learns_a_systematic_overhead(tmp_path):
    # Ten toy "architectures": conv stacks whose measured latency is 1.5 x their LUT sum.
    models = [nn.Sequential(*[nn.Conv1d(8, 8, k, padding=k // 2) for _ in range(n)]) for n in (1, 2, 3, 4, 5)
              for k in (3, 5)]
    shape = (1, 8, 40)
    lut = LatencyLUT(metadata={"device": "toy"})
    for m in models:
        for rec in trace_layers(m, shape):
            lut.add(rec, _stats(0.01 * rec.macs / 1000))
    cm = CostModel(lut, 1000.0, "toy")
    feats = [cm.features(m, shape) for m in models]
    cm.fit_correction(feats, [1.5 * f["lut_ms"] for f in feats])
    for m, f in zip(models, feats):
        assert cm.predict(m, shape).latency_ms == pytest.approx(1.5 * f["lut_ms"], rel=0.02)
    cm.save(tmp_path)
    back = CostModel.load(tmp_path)
    assert back.predict(models[3], shape) == cm.predict(models[3], shape)
    assert (tmp_path / "profiling" / "lut.json").exists()
    entry = next(iter(back.lut.to_json()["entries"].values()))
    assert set(entry) >= {"count", "mean", "var", "median", "p90", "family", "macs"}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="power"):
        CostModel(LatencyLUT(), 0.0, "x")
    cm = CostModel(LatencyLUT(), 1.0, "x")
    with pytest.raises(ValueError, match=">= 3"):
        cm.fit_correction([{"lut_ms": 1.0}], [1.0])
    with pytest.raises(ValueError, match="too small"):
        cm.predict(nn.Conv1d(2, 2, 1), (1, 2, 5))
    with pytest.raises(FileNotFoundError, match="chapter 02"):
        CostModel.load("/nonexistent/run")
    assert math.isfinite(model_size_bytes(nn.Linear(2, 2)))


def test_statistic_choice_sums_the_chosen_entry(tmp_path):
    model, shape = nn.Sequential(nn.Conv1d(4, 4, 3), nn.ReLU()), (1, 4, 20)
    lut = LatencyLUT()
    for rec in trace_layers(model, shape):
        lut.add(rec, LatencyStats.from_samples([1.0, 2.0, 9.0]))  # min 1, median 2
    assert CostModel(lut, 1.0, "x", statistic="min").predict(model, shape).latency_ms == pytest.approx(2.0)
    cm = CostModel(lut, 1.0, "x", statistic="median")
    assert cm.predict(model, shape).latency_ms == pytest.approx(4.0)
    cm.save(tmp_path)
    assert CostModel.load(tmp_path).statistic == "median"
    with pytest.raises(ValueError, match="statistic"):
        CostModel(lut, 1.0, "x", statistic="mean")


def _corrected_model():
    models = [nn.Sequential(*[nn.Conv1d(8, 8, k, padding=k // 2) for _ in range(n)]) for n in (1, 2, 3, 4)
              for k in (3, 5)]
    shape = (1, 8, 40)
    lut = LatencyLUT(metadata={"device": "toy"})
    for m in models:
        for rec in trace_layers(m, shape):
            lut.add(rec, _stats(0.01 * rec.macs / 1000))
    cm = CostModel(lut, 1000.0, "toy")
    feats = [cm.features(m, shape) for m in models]
    cm.fit_correction(feats, [f["lut_ms"] * (1.2 + 0.1 * i) for i, f in enumerate(feats)], seed=3)
    return cm, models, shape


def test_correction_is_saved_as_json_and_refits_to_identical_predictions(tmp_path):
    import json

    cm, models, shape = _corrected_model()
    cm.save(tmp_path)
    doc = json.loads((tmp_path / "profiling" / "correction.json").read_text())
    assert set(doc) == {"feature_names", "x", "y", "params"} and len(doc["x"]) == len(models)
    assert not list((tmp_path / "profiling").glob("*.pkl"))
    back = CostModel.load(tmp_path)
    for m in models + [nn.Sequential(nn.Conv1d(8, 8, 7, padding=3))]:
        assert back.predict_latency(back.features(m, shape)) == cm.predict_latency(cm.features(m, shape))


def test_a_pickle_or_malformed_correction_is_refused_without_running_it(tmp_path):
    import json
    import pickle

    from ersam_lib.core.io import ArtifactError

    cm, _, _ = _corrected_model()
    folder = tmp_path / "measured_elsewhere" / "profiling"
    folder.mkdir(parents=True)
    cm.save(folder)  # a profiling folder handed over from another machine
    good = (folder / "correction.json").read_text()
    marker = tmp_path / "payload-ran"
    (folder / "correction.json").unlink()
    (folder / "correction.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ArtifactError, match=r"correction\.pkl is a pickle, which is no longer loaded"):
        CostModel.load(folder)
    assert not marker.exists()
    for broken in ('{"x": [[1', json.dumps(json.loads(good) | {"y": [1.0]}),
                   json.dumps(json.loads(good) | {"params": {"n_estimators": 5, "criterion": "x"}})):
        (folder / "correction.json").write_text(broken)
        with pytest.raises(ArtifactError, match="cannot load the cost model in .*measured_elsewhere"):
            CostModel.load(folder)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def test_ridge_correction_recovers_a_runtime_linear_in_macs_and_layers_and_survives_a_reload(tmp_path):
    import json

    # A fusing runtime: 2 ns per conv MAC, 5 us per conv layer, 1 us per activation, whatever the eager LUT says.
    models = [nn.Sequential(*[m for _ in range(n) for m in (nn.Conv1d(c, c, k, padding=k // 2), nn.ReLU())])
              for n in (1, 2, 3, 4, 5) for k in (3, 5, 7) for c in (4, 8)]
    shape = (1, 8, 40)
    fix = [nn.Sequential(nn.Conv1d(8, m[0].in_channels, 1), m) for m in models]  # input 8 channels for every net
    lut = LatencyLUT(metadata={"device": "toy"})
    for m in fix:
        for rec in trace_layers(m, shape):
            lut.add(rec, _stats(1.0 + 0.5 * rec.macs / 1000))  # eager: far slower, another shape
    cm = CostModel(lut, 1000.0, "toy")
    feats = [cm.features(m, shape) for m in fix]
    truth = [0.002 * f["macs_conv1d"] / 1000 + 0.005 * f["n_conv1d"] + 0.001 * f["n_act"] + 0.01 for f in feats]
    fit = [i for i in range(len(fix)) if i % 3]  # two thirds to fit (every width and kernel), a third held out
    cm.fit_correction([feats[i] for i in fit], [truth[i] for i in fit], kind="ridge")
    for i in range(0, len(fix), 3):
        assert cm.predict_latency(feats[i]) == pytest.approx(truth[i], rel=0.05)
    assert cm.predict_latency({n: 0.0 for n in cm.feature_names}) >= 0.5 * min(truth)  # floored, never <= 0
    cm.save(tmp_path, runtime="executorch")
    doc = json.loads((tmp_path / "profiling" / "correction_executorch.json").read_text())
    assert doc["kind"] == "ridge" and set(doc["params"]) == {"alphas"}
    back = CostModel.load(tmp_path, runtime="executorch")
    assert [back.predict_latency(f) for f in feats] == [cm.predict_latency(f) for f in feats]
    with pytest.raises(ValueError, match="unknown correction"):
        cm.fit_correction(feats, truth, kind="svm")
    (tmp_path / "profiling" / "correction_executorch.json").write_text(json.dumps(doc | {"params": {"alphas": []}}))
    from ersam_lib.core.io import ArtifactError

    with pytest.raises(ArtifactError):
        CostModel.load(tmp_path, runtime="executorch")
