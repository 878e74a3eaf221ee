"""Devices on the host (chapter 2): the statistics, the three backends, imported profiles and clear errors."""

import json

import pytest
import torch
from torch import nn

from ersam_lib.measure.devices import (HostCPU, ImportedProfile, LatencyStats, PowerModel, get_device,
                                       module_key)
from ersam_lib.measure.export import TimingConfig

torch.set_num_threads(1)
FAST = TimingConfig(warmup=1, repeats=5, min_repeats=3, max_seconds=0.05)


def test_latency_stats_from_samples():
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.count, s.median, s.min) == (5, 3.0, 1.0)
    assert s.mean == pytest.approx(22.0) and s.var == pytest.approx(1902.5)
    assert 4.0 < s.p90 < 100.0
    with pytest.raises(ValueError, match="non-negative"):
        LatencyStats.from_samples([])
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, float("nan")])


def test_time_calls_runs_fast_calls_for_min_seconds_and_cuts_slow_ones_at_max_seconds():
    import time

    from ersam_lib.measure.export import time_calls

    calls = []
    fast = time_calls(lambda: calls.append(1), TimingConfig(warmup=2, repeats=5, min_repeats=3, min_seconds=0.02))
    assert len(calls) == len(fast) + 2 and len(fast) > 5  # past `repeats` until 20 ms of calls
    assert len(time_calls(lambda: None, TimingConfig(warmup=0, repeats=5, min_repeats=3))) == 5  # no floor: 5
    slow = time_calls(lambda: time.sleep(0.01), TimingConfig(warmup=0, repeats=100, min_repeats=2, max_seconds=0.03))
    assert 2 <= len(slow) <= 5 and min(slow) >= 10.0


def test_unknown_device_and_backend_raise_clearly():
    with pytest.raises(ValueError, match="unknown device 'tpu'.*host, adb, imported"):
        get_device("tpu")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'.*eager, executorch, onnxruntime"):
        get_device("host", backend="tensorrt")
    with pytest.raises(ValueError, match="threads"):
        HostCPU(threads=0)


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", "executorch"])
def test_host_backends_measure_and_record_metadata(backend):
    model = nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 4, 1))
    before = torch.get_num_threads()
    stats = get_device("host", backend=backend, threads=1, timing=FAST).measure(model, (1, 8, 50))
    assert 3 <= stats.count <= 5 and 0 < stats.min <= stats.median <= stats.p90
    meta = stats.metadata
    assert meta["backend"] == backend and meta["threads"] == 1 and meta["input_shape"] == [1, 8, 50]
    assert meta["versions"]["torch"] == torch.__version__ and meta["cpu"]
    assert torch.get_num_threads() == before  # the device restores the thread count


def test_prepare_exports_executorch_programs_in_parallel_and_measure_uses_them(monkeypatch):
    from ersam_lib.measure import devices
    from ersam_lib.measure.export import export_executorch, runner_for

    torch.manual_seed(0)
    models = [(nn.Sequential(nn.Conv1d(8, c, 3, padding=1), nn.ReLU(), nn.Conv1d(c, 4, 1)), (1, 8, 50))
              for c in (4, 6, 8)]
    dev = HostCPU(backend="executorch", threads=1, timing=FAST)
    dev.prepare(models, workers=2)  # fewer than min_models: left to measure(), which exports lazily
    assert not dev._programs
    dev.prepare(models + models[:1], workers=2, min_models=2)  # a repeated pair is exported once
    assert len(dev._programs) == 3
    x = torch.randn(1, 8, 50)
    for module, shape in models:
        program = dev._programs[(id(module), shape)][1]
        with torch.no_grad():
            lazy = runner_for("executorch", export_executorch(module.eval(), x.clone()), x)()[0]
            parallel = runner_for("executorch", program, x)()[0]
            assert torch.allclose(parallel, module(x), atol=1e-5) and torch.allclose(parallel, lazy)
    monkeypatch.setattr(devices, "export_executorch", lambda *a: pytest.fail("measure exported again"))
    assert dev.measure(models[0][0], models[0][1]).count >= 3
    eager = HostCPU(backend="eager", timing=FAST)
    eager.prepare(models, workers=2)  # nothing to export for the other backends
    assert not eager._programs


def test_host_energy_uses_the_documented_power_model():
    dev = HostCPU(power=PowerModel(active_mw_per_core=2000.0), threads=2, timing=FAST)
    stats = LatencyStats.from_samples([10.0, 10.0], {"threads": 2})
    assert dev.energy_mj(stats) == pytest.approx(10.0 * 2000.0 * 2 / 1000.0)  # 10 ms x 4 W = 40 mJ


def test_imported_profile_roundtrip_csv_and_json(tmp_path):
    conv = nn.Conv1d(4, 4, 3)
    key = module_key(conv, (1, 4, 20))
    assert key.startswith("Conv1d|cin=4|cout=4|k=3")
    row = {"key": key, "count": 10, "mean": 1.5, "var": 0.01, "median": 1.4, "p90": 1.7, "energy_mj": 3.0}
    (tmp_path / "p.json").write_text(json.dumps({"metadata": {"device": "pixel3"}, "entries": [row]}))
    import pandas as pd

    pd.DataFrame([row]).to_csv(tmp_path / "p.csv", index=False)
    for name in ("p.json", "p.csv"):
        dev = get_device("imported", path=tmp_path / name)
        stats = dev.measure(nn.Conv1d(4, 4, 3), (1, 4, 20))  # fresh weights: same key
        assert (stats.median, stats.count, stats.energy_mj) == (1.4, 10, 3.0)
        assert dev.energy_mj(stats) == 3.0
        with pytest.raises(KeyError, match="not measured"):
            dev.measure(conv, (1, 4, 21))
    assert get_device("imported", path=tmp_path / "p.json").name == "imported-pixel3"
    with pytest.raises(FileNotFoundError):
        ImportedProfile(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("key,mean\nx,1\n")
    with pytest.raises(ValueError, match="lacks columns"):
        ImportedProfile(tmp_path / "bad.csv")


@pytest.mark.parametrize("bad, what", [
    ({"median": -1.0}, "median"), ({"mean": float("nan")}, "mean"), ({"var": float("inf")}, "var"),
    ({"count": 0}, "count"), ({"p90": "fast"}, "p90"), ({"energy_mj": -3.0}, "energy_mj")])
def test_imported_profile_refuses_impossible_values(tmp_path, bad, what):
    import pandas as pd

    from ersam_lib.core.io import ArtifactError

    good = {"key": "k0", "count": 10, "mean": 1.5, "var": 0.01, "median": 1.4, "p90": 1.7, "energy_mj": 3.0}
    pd.DataFrame([good, good | {"key": "k1"} | bad]).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ArtifactError, match=rf"p\.csv: column '{what}' .*\['k1'\]"):
        ImportedProfile(tmp_path / "p.csv")


def test_imported_profile_refuses_ambiguous_keys_and_damaged_files(tmp_path):
    import pandas as pd

    from ersam_lib.core.io import ArtifactError

    row = {"key": "k0", "count": 10, "mean": 1.5, "var": 0.01, "median": 1.4, "p90": 1.7}
    pd.DataFrame([row, row]).to_csv(tmp_path / "same.csv", index=False)  # one layer under two op labels
    assert len(ImportedProfile(tmp_path / "same.csv").table) == 1
    pd.DataFrame([row, row | {"median": 2.0}]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(ArtifactError, match=r"twice\.csv lists keys more than once .*\['k0'\]"):
        ImportedProfile(tmp_path / "twice.csv")
    (tmp_path / "cut.json").write_text('{"entries": [{"key": "k0", "cou')
    with pytest.raises(ArtifactError, match=r"cut\.json is not valid JSON"):
        ImportedProfile(tmp_path / "cut.json")
    (tmp_path / "p.meta.json").write_text("{")
    pd.DataFrame([row]).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ArtifactError, match=r"p\.meta\.json is not valid JSON"):
        ImportedProfile(tmp_path / "p.csv")


def test_measure_latencies_times_each_job_on_its_backends_in_order():
    from ersam_lib.experiments.frontier import measure_latencies, measure_latency
    from ersam_lib.measure.export import TimingConfig

    timing = TimingConfig.for_scale("smoke")
    small, large = torch.nn.Conv1d(4, 4, 3), torch.nn.Conv1d(4, 64, 9)
    out = measure_latencies([(small, (1, 4, 32), ("eager",)), (large, (1, 4, 256), ("eager", "onnxruntime"))],
                            timing)
    assert set(out[0]) == {"eager_ms", "eager_median_ms", "eager_energy_mj_device"}
    assert {"onnxruntime_ms", "eager_ms"} <= set(out[1])
    assert all(r["eager_ms"] > 0 and r["eager_ms"] <= r["eager_median_ms"] for r in out)
    assert set(measure_latency(small, (1, 4, 32), ("eager",), timing)) == set(out[0])
