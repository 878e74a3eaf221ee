"""Chapter 6: the streaming meter: windows, decoding, level normalisation, models, bundles and the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from data_prep.normalize import TARGET_PEAK_DBFS, peak_normalize
from data_prep.rttm import window_counts
from ersam_lib.app import cli
from ersam_lib.experiments.meter import (MeterConfig, MeterError, TorchWindowCounter, audio_blocks, count, iter_windows,
                                         levels_of, load_counter, plot_timeline, save_counter, write_windows)
from ersam_lib.models.teacher import tiny_wav2vec2

from .hostile import forge_card
from .tones import COUNTS, DURATION_S, SEGMENTS, SR, TAIL_COUNT, ToneCounter, tone_recording

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [str(k) for k in range(6)]


@pytest.fixture(scope="module")
def tones() -> tuple[np.ndarray, pd.DataFrame]:
    return tone_recording(SEGMENTS, DURATION_S)


@pytest.fixture(scope="module")
def oracle() -> TorchWindowCounter:
    return TorchWindowCounter(ToneCounter(5), CLASSES)


@pytest.fixture(scope="module")
def wav2vec2() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_wav2vec2(len(CLASSES), embed_dim=16, layers=1).eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, wav2vec2) -> Path:
    """A real waveform model (tiny wav2vec2) exported as a counter bundle."""
    return save_counter(wav2vec2, CLASSES, tmp_path_factory.mktemp("model") / "counter.pt2")


# --------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("hop,tail,starts", [
    (4, "align", [0, 4, 8, 12, 13]), (4, "drop", [0, 4, 8, 12]), (5, "align", [0, 5, 10, 13]),
    (7, "align", [0, 7, 13]), (17, "align", [0, 13]), (1, "drop", list(range(14))),
])
def test_window_grid_and_tail(hop, tail, starts):
    x = np.arange(23, dtype=np.float32)  # window 10: the grid ends before sample 23 unless hop divides 13
    for blocks in ([x], [x[:3], x[3:11], x[11:12], x[12:]], [x[i:i + 1] for i in range(len(x))]):
        got = list(iter_windows(iter(blocks), window=10, hop=hop, tail=tail, batch=3))
        s = np.concatenate([g[0] for g in got])
        w = np.concatenate([g[1] for g in got])
        assert s.tolist() == starts and all(len(g[0]) <= 3 for g in got)
        np.testing.assert_array_equal(w, x[np.asarray(starts)[:, None] + np.arange(10)])
    assert list(iter_windows([x[:9]], window=10, hop=5)) == []  # shorter than one window: nothing


def test_meter_config_rejects_bad_settings():
    for bad in (dict(hop_s=0), dict(hop_s=-1.0), dict(hop_s=float("nan")), dict(hop_s=float("inf")),
                dict(tail="pad"), dict(thresholds=(1, 2)), dict(thresholds=(2, 2, 4)), dict(thresholds=(0, 2, 4))):
        with pytest.raises(MeterError):
            MeterConfig(**bad)


def test_levels_follow_the_thresholds():
    assert levels_of([0, 1, 2, 3, 4, 9]).tolist() == ["none", "low", "moderate", "moderate", "active", "active"]
    assert levels_of([0, 1, 2, 3, 4, 5], (1, 3, 5)).tolist() == ["none", "low", "low", "moderate", "moderate",
                                                                  "active"]


# --------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_blockwise_decoding_equals_whole_file_resampling(tmp_path, rate):
    rng = np.random.default_rng(rate)
    stereo = (0.3 * rng.standard_normal((int(3.7 * rate), 2))).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    g = np.gcd(rate, SR)
    whole = resample_poly(stereo.mean(axis=1), SR // g, rate // g)
    with audio_blocks(path, SR, block_s=0.31) as (blocks, info):  # many small blocks
        parts = list(blocks)
    got = np.concatenate(parts)
    assert len(parts) > 5 and info.input_rate == rate and info.channels == 2 and info.n_samples == len(whole)
    np.testing.assert_allclose(got, whole, atol=2e-6)


def test_peak_normalize_has_a_silence_floor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    x[1] = 0.0
    x[2] *= 1e-7  # dither far below the floor
    y = peak_normalize(x)
    assert np.isclose(np.abs(y[0]).max(), 10 ** (TARGET_PEAK_DBFS / 20), rtol=1e-6)
    assert not np.any(y[1]) and np.abs(y[2]).max() < 1e-2  # silence is not blown up to full scale
    np.testing.assert_allclose(peak_normalize(0.01 * x[:1]), y[:1], rtol=1e-5)


# --------------------------------------------------------------------------------------------- the meter
def test_meter_counts_a_recording_with_known_counts(tones, oracle):
    audio, turns = tones
    df = count(audio, oracle, input_rate=SR)
    assert df["count"].tolist() == COUNTS + [TAIL_COUNT]
    assert df["start_s"].tolist() == [0, 5, 10, 15, 20, 25, 30, DURATION_S - 5]  # the tail ends at the end
    assert (df["end_s"] - df["start_s"] == 5).all()
    assert df["level"].tolist() == levels_of(COUNTS + [TAIL_COUNT]).tolist()
    probs = df[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1) and (probs.argmax(axis=1) == df["count"]).all()
    a = df.attrs
    assert a["audio_s"] == DURATION_S and a["rtf"] == pytest.approx(a["total_s"] / DURATION_S)
    assert a["decode_s"] + a["model_s"] == pytest.approx(a["total_s"]) and a["speed_x"] > 1
    # The annotation's truths (RTTM turns -> windows) line up with the meter's windows.
    truth = window_counts(turns, 5.0, 5.0, DURATION_S)
    assert truth["count"].tolist() == COUNTS and truth["start_s"].tolist() == df["start_s"][:-1].tolist()
    half = count(audio, oracle, input_rate=SR, hop_s=2.5, tail="drop")
    assert half["count"].tolist() == window_counts(turns, 5.0, 2.5, DURATION_S)["count"].tolist()


def test_meter_reads_any_rate_and_channel_count(tmp_path, tones, oracle):
    audio, _ = tones
    stereo = np.stack([audio, 0.5 * audio], axis=1)
    for rate, suffix in ((44100, "flac"), (48000, "ogg"), (16000, "wav")):
        path = tmp_path / f"x.{suffix}"
        sf.write(path, resample_poly(stereo, rate // np.gcd(rate, SR), SR // np.gcd(rate, SR)), rate)
        df = count(path, oracle)
        assert df.attrs["input_sample_rate"] == rate and df.attrs["input_channels"] == 2
        assert df["count"].tolist() == COUNTS + [TAIL_COUNT], suffix


@pytest.mark.parametrize("factor", [0.01, 0.05, 0.2, 0.5, 1.0])
def test_counts_do_not_depend_on_the_input_level(tones, oracle, wav2vec2, factor):
    audio, _ = tones
    # The tone counter's absolute threshold makes it level-sensitive: without normalisation, quiet input loses
    # its speakers; with it, every factor from 0.01 to 1 gives the same counts.
    raw = count(audio * factor, oracle, input_rate=SR, normalize=False)["count"].tolist()
    assert (raw == COUNTS + [TAIL_COUNT]) == (factor >= 0.2)  # tones of amplitude 0.2 x factor vs 0.02
    assert count(audio * factor, oracle, input_rate=SR)["count"].tolist() == COUNTS + [TAIL_COUNT]
    w2v = TorchWindowCounter(wav2vec2, CLASSES)
    ref = count(audio, w2v, input_rate=SR, hop_s=10.0)
    got = count(audio * factor, w2v, input_rate=SR, hop_s=10.0)
    assert got["count"].tolist() == ref["count"].tolist()
    np.testing.assert_allclose(got.filter(like="p_").to_numpy(), ref.filter(like="p_").to_numpy(), atol=1e-4)


def test_a_levels_model_reports_levels_without_counts(tones):
    class Levels:  # the WindowCounter protocol, nothing more: "moderate" when loud, else "none"
        classes, sample_rate, window_s = ["none", "low", "moderate", "active"], SR, 5.0

        def predict_proba(self, windows):
            loud = np.abs(windows).max(axis=1) > 0.1
            return np.eye(4)[np.where(loud, 2, 0)]

    df = count(tones[0], Levels(), input_rate=SR, normalize=False)
    assert df["count"].isna().all()
    assert df["level"].tolist() == ["moderate" if c else "none" for c in COUNTS + [TAIL_COUNT]]


def test_writers_and_plot(tmp_path, tones, oracle):
    df = count(tones[0], oracle, input_rate=SR)
    back = pd.read_csv(write_windows(df, tmp_path / "w.csv"))
    assert back["count"].tolist() == df["count"].tolist() and back["level"].tolist() == df["level"].tolist()
    js = json.loads(write_windows(df, tmp_path / "w.json").read_text())
    assert [w["count"] for w in js["windows"]] == df["count"].tolist() and js["meta"]["hop_s"] == 5.0
    with pytest.raises(MeterError, match="format"):
        write_windows(df, tmp_path / "w.txt")
    plot_timeline(df, tmp_path / "t.png", truth=COUNTS + [TAIL_COUNT])
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png", "w.csv", "w.json"]  # no temporary files left


# --------------------------------------------------------------------------------------------- bundles
def test_bundle_round_trip(bundle, wav2vec2, tones):
    card = json.loads(bundle.with_suffix(".json").read_text())
    assert card["kind"] == "ersam-model-card" and card["classes"] == CLASSES and card["sample_rate"] == SR
    assert card["file"] == bundle.name and card["format"] == "torch.export" and card["input"]["kind"] == "audio"
    counter = load_counter(bundle)
    windows = peak_normalize(np.stack([tones[0][i * SR:(i + 5) * SR] for i in (0, 5, 20)]))
    want = TorchWindowCounter(wav2vec2, CLASSES).predict_proba(windows)
    np.testing.assert_allclose(counter.predict_proba(windows), want, atol=1e-5)
    assert counter.predict_proba(windows[:1]).shape == (1, len(CLASSES))  # the batch size is dynamic


def test_load_counter_refuses_files_that_are_not_ours(tmp_path, bundle, wav2vec2):
    torch.save(wav2vec2.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "lonely.pt2").write_bytes(bundle.read_bytes())  # a program without its card
    (tmp_path / "garbage.pt2").write_bytes(b"not a zip archive" * 10)
    forge_card(tmp_path / "garbage.pt2", bundle.with_suffix(".json").read_text())
    (tmp_path / "foreign.pt2").write_bytes(bundle.read_bytes())
    (tmp_path / "foreign.json").write_text(json.dumps({"kind": "something else"}))
    (tmp_path / "broken.pt2").write_bytes(bundle.read_bytes())
    (tmp_path / "broken.json").write_text("{not json")
    cases = {"missing.pt2": "does not exist", "weights.pt": "not a counter program of this book", "lonely.pt2": "no card",
             "garbage.pt2": "not a torch.export program", "foreign.pt2": "does not describe a model of this book",
             "broken.pt2": "not valid JSON"}
    for name, message in cases.items():
        with pytest.raises(MeterError, match=message) as err:
            load_counter(tmp_path / name)
        assert "\n" not in str(err.value) and Path(name).stem in str(err.value)


# --------------------------------------------------------------------------------------------- the CLI
def _bad_inputs(tmp_path: Path, tones) -> dict[str, Path]:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    good = io.BytesIO()
    sf.write(good, tones[0][:SR * 6], SR, format="WAV")
    damaged = bytearray(good.getvalue())
    damaged[:12] = b"XXXXXXXXXXXX"  # the RIFF header is gone
    (tmp_path / "damaged.wav").write_bytes(bytes(damaged))
    sf.write(tmp_path / "short.flac", tones[0][:SR * 3], SR)
    (tmp_path / "folder.wav").mkdir()
    return {"missing.wav": "does not exist", "empty.wav": "is empty", "text.wav": "cannot read",
            "damaged.wav": "cannot read", "short.flac": "shorter than one 5-s window", "folder.wav": "not a file"}


def test_cli_count_bad_input_gives_one_line_and_exit_2(tmp_path, tones, bundle, capsys):
    for name, message in _bad_inputs(tmp_path, tones).items():
        assert cli.main(["count", str(tmp_path / name), "--model", str(bundle)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and name in err and "Traceback" not in err, err
    sf.write(tmp_path / "ok.wav", tones[0][:SR * 6], SR)
    ok = str(tmp_path / "ok.wav")
    for args, message in (
            (["--model", str(tmp_path / "empty.wav")], "not a counter program of this book"),
            (["--model", str(tmp_path / "nowhere.pt2")], "does not exist"),
            ([], "no model given"),
            (["--model", str(bundle), "--hop", "0"], "hop must be a positive"),
            (["--model", str(bundle), "--hop", "-2"], "hop must be a positive"),
            (["--model", str(bundle), "--thresholds", "1,x,4"], "--thresholds"),
            (["--model", str(bundle), "--out", str(tmp_path / "out.xlsx")], "output format")):
        assert cli.main(["count", ok, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exit_:  # argparse's own errors: one line as well
        cli.main(["count", ok, "--model", str(bundle), "--hop", "abc"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--hop" in err


def test_cli_count_reads_stdin_and_writes_outputs(tmp_path, tones, bundle):
    buf = io.BytesIO()
    sf.write(buf, tones[0][:SR * 16], SR, format="FLAC")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERSAM_PROGRESS": "0"}
    run = subprocess.run([sys.executable, "-m", "ersam_lib", "count", "-", "--model", str(bundle), "--hop", "2.5",
                          "--plot", str(tmp_path / "t.png")], input=buf.getvalue(), capture_output=True, env=env,
                         cwd=tmp_path, timeout=600, check=False)
    assert run.returncode == 0, run.stderr.decode()
    table = pd.read_csv(io.StringIO(run.stdout.decode()))
    want = count(tones[0][:SR * 16], load_counter(bundle), input_rate=SR, hop_s=2.5)
    assert table["start_s"].tolist() == want["start_s"].tolist() == [0, 2.5, 5, 7.5, 10, 11]
    assert table["count"].tolist() == want["count"].tolist()
    assert "x real time (RTF" in run.stderr.decode() and (tmp_path / "t.png").exists()
    sf.write(tmp_path / "tones.wav", tones[0], SR)
    assert cli.main(["count", str(tmp_path / "tones.wav"), "--model", str(bundle), "--out",
                     str(tmp_path / "w.json")]) == 0
    assert len(json.loads((tmp_path / "w.json").read_text())["windows"]) == 8


def test_cli_bad_input_end_to_end(tmp_path, bundle, monkeypatch, capsys):
    """In a real process: one line, exit code 2, no traceback; and an empty standard input."""
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERSAM_PROGRESS": "0"}
    for args in (["count", str(tmp_path / "text.wav"), "--model", str(tmp_path / "text.wav")],
                 ["evaluate-rttm", str(tmp_path / "nowhere"), "--model", str(tmp_path / "text.wav")]):
        run = subprocess.run([sys.executable, "-m", "ersam_lib", *args], capture_output=True, env=env, timeout=300,
                             check=False)
        err = run.stderr.decode()
        assert run.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli.main(["count", "-", "--model", str(bundle)]) == 2
    assert "standard input is empty" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- hostile files (issue 30)
class _Payload:
    """Unpickling it runs ``touch <marker>``: what a hostile model file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _rewrite_zip(src: Path, dst: Path, replace) -> None:
    """Copy the zip archive ``src`` to ``dst`` with ``replace(name, data) -> data`` applied to each member."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, replace(item.filename, zin.read(item)))


def _pickle_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_a_pt2_carrying_a_pickled_payload_is_refused_before_it_runs(tmp_path, bundle):
    """Issue 30, item 1: a bundle whose sample inputs, or a weight its config marks as pickled, unpickle to code
    (the card forged to match) is refused with one line and the payload never runs (load_counter and the CLI)."""
    marker = tmp_path / "pwned"
    payload = _pickle_of({"x": _Payload(marker)})
    card = bundle.with_suffix(".json").read_text()
    _rewrite_zip(bundle, tmp_path / "inputs.pt2",
                 lambda name, data: payload if name.endswith("data/sample_inputs/model.pt") else data)

    def pickled_weight(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            pickled_weight.target = config["config"][first]["path_name"]
            return json.dumps(config).encode()
        return data

    _rewrite_zip(bundle, tmp_path / "step.pt2", pickled_weight)
    _rewrite_zip(tmp_path / "step.pt2", tmp_path / "weights.pt2",
                 lambda name, data: payload if name.endswith(f"data/weights/{pickled_weight.target}") else data)
    sf.write(tmp_path / "ok.wav", np.zeros(6 * SR, np.float32), SR)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERSAM_PROGRESS": "0"}
    for name in ("inputs.pt2", "weights.pt2"):
        forge_card(tmp_path / name, card)
        with pytest.raises(MeterError, match="could run code") as err:
            load_counter(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
        run = subprocess.run([sys.executable, "-m", "ersam_lib", "count", str(tmp_path / "ok.wav"), "--model",
                              str(tmp_path / name)], capture_output=True, env=env, cwd=tmp_path, timeout=300)
        err_text = run.stderr.decode()
        assert run.returncode == 2 and "could run code" in err_text and "Traceback" not in err_text, err_text
        assert "Fallback" not in err_text  # torch.export.load never got to unpickle it
    assert not marker.exists()
    torch.load(io.BytesIO(payload), weights_only=False)  # the control: plain unpickling of it does run the payload
    assert marker.exists()


def test_a_program_that_is_not_the_one_its_card_describes_is_refused(tmp_path, bundle):
    """Issue 30, items 3 and 12: a program changed after its card was written (digest), a card naming another
    program, and impossible card values (batch 0, sample rate 0, window 0) are one-line errors naming the file."""
    card = json.loads(bundle.with_suffix(".json").read_text())
    assert card["sha256"] == __import__("hashlib").sha256(bundle.read_bytes()).hexdigest()
    damaged = bytearray(bundle.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    (tmp_path / "damaged.pt2").write_bytes(bytes(damaged))
    (tmp_path / "damaged.json").write_text(json.dumps(card | {"file": "damaged.pt2"}))
    (tmp_path / "other.pt2").write_bytes(bundle.read_bytes())
    (tmp_path / "other.json").write_text(json.dumps(card))  # still names counter.pt2
    cases = {"damaged.pt2": "does not match the SHA-256", "other.pt2": "is the card of 'counter.pt2'"}
    for key, value, message in (("batch", 0, "batch must be"), ("sample_rate", 0, "sample_rate must be"),
                                ("window_s", 0.0, "window_s must be"), ("sample_rate", 16000.5, "sample_rate")):
        name = f"{key}-{str(value).replace('.', '_')}.pt2"
        (tmp_path / name).write_bytes(bundle.read_bytes())
        forge_card(tmp_path / name, card, **{key: value})
        cases[name] = message
    for name, message in cases.items():
        with pytest.raises(MeterError, match=message) as err:
            load_counter(tmp_path / name)
        assert "\n" not in str(err.value) and Path(name).stem in str(err.value)


def test_count_warns_about_a_truncated_wav_and_checks_the_plot_name_first(tmp_path, tones, bundle, capsys):
    """Issue 30, items 8 and 12: a WAV cut short is counted with a warning (libsndfile reads it silently); a plot
    name with an unknown suffix is refused before any work (nothing printed to standard output)."""
    sf.write(tmp_path / "full.wav", tones[0][:SR * 12], SR, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    df = count(tmp_path / "cut.wav", load_counter(bundle))
    assert len(df) == 2 and "is truncated: its header declares 12.00 s" in df.attrs["warnings"][0]
    assert count(tmp_path / "full.wav", load_counter(bundle)).attrs["warnings"] == []
    assert cli.main(["count", str(tmp_path / "cut.wav"), "--model", str(bundle)]) == 0
    assert "[ersam] warning: " in capsys.readouterr().err
    assert cli.main(["count", str(tmp_path / "full.wav"), "--model", str(bundle), "--plot",
                     str(tmp_path / "x.txt")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "image format of" in out.err
    assert not (tmp_path / "x.txt").exists()
