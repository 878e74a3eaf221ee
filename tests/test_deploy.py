"""Chapter 6: audio-in programs, PT2E int8, the ExecuTorch and ONNX round trips, cards, and the meter on a .pte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from data_prep.config import FeatureConfig
from ersam_lib.app import cli
from ersam_lib.core.cards import CardError, ModelCard
from ersam_lib.core.io import sha256_file
from ersam_lib.experiments.deploy import (
                                          AudioCounter,
                                          cost_breakdown,
                                          export_program,
                                          measure_program,
                                          precision_scores,
                                          quantize_pt2e,
                                          )
from ersam_lib.experiments.meter import MeterError, TorchWindowCounter, count, load_counter
from ersam_lib.measure.export import TimingConfig, export_onnx, runner_for
from ersam_lib.measure.frontend import LogMelFrontEnd
from ersam_lib.measure.uncertainty import UNDECIDED, rate_interval

from .hostile import forge_card
from .tones import DURATION_S, FREQS, SEGMENTS, SR, tone_recording

CFG = FeatureConfig(n_mels=32, hop_length=640)  # the smoke scale's front end: small and quick to lower
CLASSES = [str(k) for k in range(4)]
CARD = ModelCard(file="tiny.pt", format="state_dict", sha256="0" * 64, classes=tuple(CLASSES),
                 input={"kind": "logmel", "shape": [1, CFG.n_mels, 126]}, name="tiny",
                 architecture={"test": "conv-pool-linear"}, manifest_sha256="0" * 64)
INT8_LOGIT_TOL = (0.02, 0.1)  # mean and largest |int8 - float| logit, as a share of the float logits' range
INT8_ARGMAX_AGREE = 0.99


def _windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 5-s windows of a toy counting task and their labels: window i holds ``i % 4`` steady tones of random
    amplitude over noise at a random level."""
    rng = np.random.default_rng(seed)
    t = np.arange(5 * SR) / SR
    labels = np.arange(n) % len(CLASSES)
    out = rng.standard_normal((n, 5 * SR)) * rng.uniform(0.001, 0.02, (n, 1))
    for i, k in enumerate(labels):
        for f in rng.choice(FREQS, k, replace=False):
            out[i] += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32), labels


def _tiny_model(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small conv net trained for a few steps on the toy task: a model with decisive margins, as trained counters
    have (a random network's are near ties, which any rounding flips)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(CFG.n_mels, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(16, len(CLASSES)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("deploy")
    fe = LogMelFrontEnd(CFG)
    windows, labels = _windows(256, seed=1)
    with torch.no_grad():
        calibration = fe(torch.from_numpy(windows))
    model = _tiny_model(calibration, torch.from_numpy(labels))
    quantized = quantize_pt2e(model, calibration, batch_size=64)
    programs = {"float": AudioCounter(fe, model).eval(), "int8": AudioCounter(fe, quantized).eval()}
    paths = {p: export_program(m, folder / f"tiny_{p}.pte", CARD, precision=p)
             for p, m in programs.items()}
    paths["onnx"] = export_program(programs["float"], folder / "tiny_float_onnx.onnx", CARD)
    paths["onnx_int8"] = export_program(programs["int8"], folder / "tiny_int8_onnx.onnx", CARD)
    return {"folder": folder, "programs": programs, "paths": paths, "model": model, "quantized": quantized}


def _logits(runner) -> np.ndarray:
    out = runner()
    out = out[0] if isinstance(out, (list, tuple)) else out
    return np.asarray(out.numpy() if isinstance(out, torch.Tensor) else out)


def test_float_round_trip_eager_executorch_onnx(deployed):
    for w in _windows(8, seed=2)[0]:
        x = torch.from_numpy(w[None])
        with torch.no_grad():
            eager = deployed["programs"]["float"](x).numpy()
        for backend, path in (("executorch", deployed["paths"]["float"]), ("onnxruntime", deployed["paths"]["onnx"])):
            np.testing.assert_allclose(_logits(runner_for(backend, path, x)), eager, atol=1e-4, rtol=0)


def test_int8_program_stays_close_to_float(deployed):
    """int8 logits within INT8_LOGIT_TOL of the float ones (mean and largest error, as a share of the range of the
    float logits); the same argmax on >= 99 % of windows; the .pte runs what the quantized graph simulates in
    PyTorch (up to rounding); the int8 ONNX program stays within the largest int8 error of float."""
    windows = torch.from_numpy(_windows(200, seed=3)[0])
    with torch.no_grad():
        ref = deployed["programs"]["float"](windows).numpy()
        q = deployed["programs"]["int8"](windows).numpy()
    scale = ref.max() - ref.min()
    assert np.abs(q - ref).mean() <= INT8_LOGIT_TOL[0] * scale and np.abs(q - ref).max() <= INT8_LOGIT_TOL[1] * scale
    assert (q.argmax(1) == ref.argmax(1)).mean() >= INT8_ARGMAX_AGREE
    for i in range(0, 200, 25):
        x = windows[i:i + 1]
        pte = _logits(runner_for("executorch", deployed["paths"]["int8"], x))
        np.testing.assert_allclose(pte, q[i:i + 1], atol=INT8_LOGIT_TOL[0] * scale, rtol=0)
        # ONNX Runtime fuses the QuantizeLinear/DequantizeLinear pairs its own way (other rounding and requantisation
        # points), so it is held to the int8 tolerance against float, not to PyTorch's simulation.
        ort = _logits(runner_for("onnxruntime", deployed["paths"]["onnx_int8"], x))
        np.testing.assert_allclose(ort, ref[i:i + 1], atol=INT8_LOGIT_TOL[1] * scale, rtol=0)
        assert ort.argmax() == ref[i].argmax()


def test_a_failed_export_leaves_neither_program_nor_card(tmp_path):
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([float(x.sum().item() > 0)])[None]  # data-dependent Python control flow

    with pytest.raises(Exception):  # noqa: B017 - whichever error the exporter raises
        export_program(Unexportable(), tmp_path / "bad.pte", CARD)
    assert not list(tmp_path.iterdir())


def test_cards_describe_the_programs(deployed, tmp_path):
    for key, path in deployed["paths"].items():
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["kind"] == "ersam-model-card" and card["file"] == path.name
        assert card["format"] == ("onnx" if key.startswith("onnx") else "executorch")
        assert card["classes"] == CLASSES and card["sample_rate"] == SR and card["window_s"] == 5.0
        assert card["input"] == {"kind": "audio", "shape": [1, 5 * SR], "dtype": "float32"}
        assert card["normalizes"] is True and card["sha256"] == sha256_file(path)  # issue 30
        assert card["architecture"] == CARD.architecture and card["manifest_sha256"] == CARD.manifest_sha256
    clash = deployed["paths"]["float"].with_suffix(".onnx")  # would share tiny_float.json with the .pte
    with pytest.raises(CardError, match="is the card of tiny_float.pte"):
        export_program(deployed["programs"]["float"], clash, CARD)


def test_measure_program_reports_size_latency_memory(deployed):
    path = deployed["paths"]["int8"]
    m = measure_program(path, TimingConfig(warmup=1, repeats=3, min_repeats=3, max_seconds=0.1))
    assert m["size_kb"] == path.stat().st_size / 1000 and 0 < m["latency_ms"] <= m["latency_median_ms"]
    assert m["repeats"] == 3 and 0 < m["peak_mb"] < 500


def test_precision_scores_table(deployed):
    fe = LogMelFrontEnd(CFG)
    with torch.no_grad():
        windows, labels = _windows(40, seed=4)
        x = fe(torch.from_numpy(windows))
    ds = torch.utils.data.TensorDataset(x, torch.from_numpy(labels))
    table = precision_scores({"tiny": {"float": deployed["model"], "int8": deployed["quantized"]}}, {"test": ds},
                             len(CLASSES))
    row = table.iloc[0]
    assert row["model"] == "tiny" and row["n"] == 40 and row["float_acc"] >= 0.9 and 0 <= row["int8_acc"] <= 1
    assert row["int8_drop_points"] == pytest.approx(100 * (row["float_acc"] - row["int8_acc"]))
    # the drop is McNemar's on the same 40 windows: its interval holds 0 exactly when the verdict is undecided
    assert row["int8_drop_points_low"] <= row["int8_drop_points"] <= row["int8_drop_points_high"]
    assert (row["int8_verdict"] == UNDECIDED) == (row["int8_drop_points_low"] <= 0 <= row["int8_drop_points_high"])
    assert (row["int8_p"] < 0.05) == (row["int8_verdict"] != UNDECIDED)
    for p in ("float", "int8"):
        assert row[f"{p}_acc_low"] <= row[f"{p}_acc"] <= row[f"{p}_acc_high"]
        assert (row[f"{p}_acc_low"], row[f"{p}_acc_high"]) == pytest.approx(
            (rate_interval(round(40 * row[f"{p}_acc"]), 40).low, rate_interval(round(40 * row[f"{p}_acc"]), 40).high))


def test_cost_breakdown_splits_the_program_into_front_end_and_network(deployed):
    from ersam_lib.measure.complexity import count_params

    fe = deployed["programs"]["float"].frontend
    window = torch.zeros(1, round(CARD.window_s * CARD.sample_rate))
    table = cost_breakdown(fe, {"float": deployed["model"], "int8": deployed["quantized"]}, window,
                           TimingConfig(warmup=1, repeats=3)).set_index(["part", "precision"])
    assert list(table.index) == [("front end", "float"), ("network", "float"), ("network", "int8")]
    params = count_params(deployed["model"])
    assert table.loc[("network", "float"), "weights_kb"] == 4 * table.loc[("network", "int8"), "weights_kb"] == (
        4 * params / 1000)
    dft_kb = sum(b.numel() * b.element_size() for b in fe.buffers()) / 1000
    assert table.loc[("front end", "float"), "weights_kb"] == dft_kb > 100  # the DFT matrices: float32, hundreds of kB
    # the front end's MACs: its matrix products per window (DFT parts and the mel filterbank), counted by torch
    frames = fe.n_frames(window.shape[-1])
    dft = sum(frames * p.shape[0] * p.shape[1] for p in fe._parts())
    assert table.loc[("front end", "float"), "macs"] == dft + frames * fe.mel.shape[0] * fe.mel.shape[1]
    assert (table["program_kb"] > 0).all() and (table["latency_ms"] > 0).all()
    whole = deployed["paths"]["float"].stat().st_size / 1000  # the audio-in program holds both parts
    assert whole == pytest.approx(table.loc[("front end", "float"), "program_kb"]
                                  + table.loc[("network", "float"), "program_kb"], rel=0.2)


def test_meter_runs_the_deployed_program(deployed, tmp_path, capsys):
    audio, _ = tone_recording(SEGMENTS, DURATION_S)
    counter = load_counter(deployed["paths"]["int8"])
    eager = TorchWindowCounter(deployed["programs"]["int8"], CLASSES)
    got, want = count(audio, counter, input_rate=SR), count(audio, eager, input_rate=SR)
    np.testing.assert_allclose(got.filter(like="p_").to_numpy(), want.filter(like="p_").to_numpy(), atol=1e-2)
    onnx = count(audio, load_counter(deployed["paths"]["onnx"]), input_rate=SR)
    assert len(onnx) == len(got) == 8
    sf.write(tmp_path / "tones.wav", audio, SR)
    assert cli.main(["count", str(tmp_path / "tones.wav"), "--model", str(deployed["paths"]["float"])]) == 0
    assert "x real time" in capsys.readouterr().err


def test_model_files_that_are_not_ours_get_one_line(deployed, tmp_path, capsys):
    pte = deployed["paths"]["float"]
    card = pte.with_suffix(".json").read_text()
    (tmp_path / "lonely.pte").write_bytes(pte.read_bytes())
    (tmp_path / "garbage.pte").write_bytes(b"not a program" * 20)
    forge_card(tmp_path / "garbage.pte", card)
    (tmp_path / "noisy.onnx").write_bytes(b"\x00\x01 not protobuf" * 20)
    forge_card(tmp_path / "noisy.onnx", card, format="onnx")
    (tmp_path / "liar.pte").write_bytes(pte.read_bytes())
    forge_card(tmp_path / "liar.pte", card, format="onnx")
    sf.write(tmp_path / "ok.wav", np.zeros(6 * SR, np.float32), SR)
    cases = {"lonely.pte": "no card", "garbage.pte": "not an ExecuTorch program", "noisy.onnx": "cannot load",
             "liar.pte": "describes a 'onnx' file", "ok.wav": "not a counter program of this book"}
    for name, message in cases.items():
        with pytest.raises(MeterError, match=message) as err:
            load_counter(tmp_path / name)
        assert "\n" not in str(err.value) and Path(name).stem in str(err.value)
        assert cli.main(["count", str(tmp_path / "ok.wav"), "--model", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


# --------------------------------------------------------------------------------------------- hostile files (issue 30)
def test_a_damaged_program_stops_the_meter_with_the_command_that_rebuilds_it(deployed, tmp_path, capsys):
    """Issue 30, item 3: ~570 flipped bytes of a .pte's constant data load and run, so the card's digest is what
    finds them; in a run's deploy/ folder the one line names chapter 6's command."""
    run = tmp_path / "run"
    (run / "deploy").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"scale": "smoke", "seed": 0, "chapters": {}}))
    pte = run / "deploy" / "tiny_float.pte"
    data = bytearray(deployed["paths"]["float"].read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 570):
        data[i] ^= 0x10
    pte.write_bytes(bytes(data))
    (run / "deploy" / "tiny_float.json").write_text(deployed["paths"]["float"].with_suffix(".json").read_text())
    sf.write(tmp_path / "ok.wav", np.zeros(6 * SR, np.float32), SR)
    assert cli.main(["count", str(tmp_path / "ok.wav"), "--model", str(pte)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the SHA-256" in err and str(pte) in err
    assert "--only 06" in err and "--scale smoke" in err
    runner_for("executorch", pte, torch.zeros(1, 5 * SR))()  # the control: the runtime itself takes it


def test_no_normalize_is_refused_where_the_program_normalises(deployed, tmp_path, capsys):
    """Issue 30, item 10: chapter 6's programs normalise the level inside; --no-normalize cannot turn that off, so
    it is an error instead of a setting the output metadata reports but the counts ignore."""
    audio, _ = tone_recording(SEGMENTS, DURATION_S)
    counter = load_counter(deployed["paths"]["float"])
    assert counter.normalizes
    quiet, loud = count(audio * 0.001, counter, input_rate=SR), count(audio, counter, input_rate=SR)
    np.testing.assert_allclose(quiet.filter(like="p_").to_numpy(), loud.filter(like="p_").to_numpy(), atol=1e-3)
    with pytest.raises(MeterError, match="cannot turn that off"):
        count(audio, counter, input_rate=SR, normalize=False)
    sf.write(tmp_path / "tones.wav", audio, SR)
    assert cli.main(["count", str(tmp_path / "tones.wav"), "--model", str(deployed["paths"]["onnx"]),
                     "--no-normalize"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "normalizes: true" in err


def test_a_foreign_onnx_program_with_a_forged_card_is_one_line(tmp_path, capsys):
    """Issue 30, item 8: an ONNX file of another model (another input) under a card of ours: refused when loaded,
    with the input it takes, instead of a traceback from the runtime on the first window."""
    path = tmp_path / "foreign.onnx"
    export_onnx(nn.Linear(10, len(CLASSES)).eval(), torch.zeros(1, 10), path)
    forge_card(path, {"kind": "ersam-model-card", "version": 2, "format": "onnx", "classes": CLASSES,
                      "input": {"kind": "audio", "shape": [1, 5 * SR]}, "sample_rate": SR, "window_s": 5.0,
                      "batch": 1})
    with pytest.raises(MeterError, match="not the one") as err:
        load_counter(path)
    assert "\n" not in str(err.value) and "foreign.onnx" in str(err.value)
    sf.write(tmp_path / "ok.wav", np.zeros(6 * SR, np.float32), SR)
    assert cli.main(["count", str(tmp_path / "ok.wav"), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
