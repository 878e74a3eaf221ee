"""Chapter 6: the generated annotated party recording and the meter's evaluation on RTTM-annotated recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from data_prep.labels import max_concurrent
from data_prep.party import PartyConfig, make_party, save_party
from data_prep.rttm import format_rttm, read_rttm, window_counts
from data_prep.sources import FolderSource, SourceError
from ersam_lib.app import cli
from ersam_lib.experiments.meter import MeterError, TorchWindowCounter, save_counter
from ersam_lib.experiments.rttm_eval import confusion, evaluate_rttm, score
from ersam_lib.models.teacher import tiny_wav2vec2

from .tones import COUNTS, DURATION_S, SEGMENTS, SR, ToneCounter, tone_recording, write_tone_speakers

CLASSES = [str(k) for k in range(6)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> FolderSource:
    return FolderSource(write_tone_speakers(tmp_path_factory.mktemp("speakers"), n_speakers=6))


@pytest.fixture(scope="module")
def party(source):
    return make_party(source, PartyConfig.for_scale("smoke", seed=3))


def test_party_speakers_join_and_leave_and_the_count_changes(party, source):
    cfg = party.config
    assert party.duration_s == cfg.duration_s == 60.0 and party.audio.dtype == np.float32
    assert np.isclose(np.abs(party.audio).max(), 10 ** (cfg.peak_dbfs / 20), rtol=1e-4)
    p = party.presence
    assert (p["join_s"] > 0).all() and (p["leave_s"] < cfg.duration_s).any()  # they arrive, some leave
    # Never more guests in the room than max_present, and at some point that many.
    t = np.arange(0, cfg.duration_s, 0.01)
    in_room = ((p["join_s"].to_numpy()[:, None] <= t) & (t < p["leave_s"].to_numpy()[:, None])).sum(axis=0)
    assert in_room.max() == cfg.max_present and in_room[0] == 0
    # The RTTM truths of 5-s windows are chapter 1's label (max concurrent VAD activity) and they change.
    truth = window_counts(party.turns, 5.0, 5.0, party.duration_s)["count"].to_numpy()
    assert truth.tolist() == [max_concurrent(party.activity[:, i * 500:(i + 1) * 500]) for i in range(12)]
    assert len(set(truth.tolist())) >= 3 and truth.max() <= cfg.max_present
    again = make_party(source, PartyConfig.for_scale("smoke", seed=3))
    np.testing.assert_array_equal(again.audio, party.audio)
    pd.testing.assert_frame_equal(again.turns, party.turns)
    other = make_party(source, PartyConfig.for_scale("smoke", seed=4))
    assert not other.turns.equals(party.turns)


def test_party_turns_cover_all_the_speech(source):
    """Without background noise, every audible 10-ms frame lies inside some speaker's RTTM turn."""
    quiet = make_party(source, PartyConfig.for_scale("smoke", seed=5, snr_db=None))
    frame_peak = np.abs(quiet.audio).reshape(-1, 160).max(axis=1)
    covered = quiet.activity.any(axis=0)
    assert covered.mean() > 0.3 and not np.any(frame_peak[~covered] > 1e-6)


def test_party_needs_enough_speakers(source):
    with pytest.raises(SourceError, match="needs as many speakers"):
        make_party(source, PartyConfig(duration_s=30.0, max_present=7))
    with pytest.raises(SourceError, match="not in the folder source"):
        make_party(source, speakers=["s0", "nobody"])
    with pytest.raises(ValueError, match="duration_s"):
        PartyConfig(duration_s=5.0)


def test_saved_party_reads_back(tmp_path, party):
    wav, rttm = save_party(party, tmp_path)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == SR and len(audio) == len(party.audio) and np.abs(audio - party.audio).max() < 1e-4
    back = read_rttm(rttm)
    assert back["file_id"].eq("party").all() and len(back) == len(party.turns)
    np.testing.assert_allclose(back["onset"], party.turns["onset"], atol=1e-9)
    np.testing.assert_allclose(back["duration"], party.turns["duration"], atol=1e-9)
    assert json.loads((tmp_path / "party.json").read_text())["speakers"] == party.speakers


def test_party_from_a_built_run_uses_its_test_speakers(tmp_path, monkeypatch):
    from data_prep.build import build_tiny, load_dataset_info
    from data_prep.party import party_from_run

    monkeypatch.setenv("ERSAM_CACHE", str(tmp_path / "cache"))
    build_tiny(tmp_path / "run")
    test_speakers = load_dataset_info(tmp_path / "run")["speaker_lists"]["test"]
    party = party_from_run(tmp_path / "run", PartyConfig(duration_s=40.0, max_present=2, scene_s=(4.0, 8.0)))
    assert set(party.speakers) <= set(test_speakers) and len(party.speakers) == 2
    truth = window_counts(party.turns, 5.0, 5.0, party.duration_s)["count"]
    assert truth.max() == 2 and truth.min() == 0


# --------------------------------------------------------------------------------------------- evaluation
class Scripted:
    """A WindowCounter with known predictions: the next counts of ``script``, one per window asked about."""

    classes, sample_rate, window_s = CLASSES, SR, 5.0

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        out = np.eye(len(self.classes))[self.script[:len(windows)]]
        del self.script[:len(windows)]
        return out


def _annotated_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    audio, turns = tone_recording(SEGMENTS, DURATION_S, file_id="tones")
    sf.write(root / "tones.wav", audio, SR, subtype="FLOAT")
    other = turns.assign(file_id="other", onset=turns["onset"] + 1.0)  # turns of another recording: ignored
    (root / "tones.rttm").write_text(";; two recordings in one file\n" + format_rttm(pd.concat([turns, other])))
    sf.write(root / "unannotated.flac", audio[:SR * 6], SR)
    return root


def test_evaluate_rttm_metrics_match_a_hand_computation(tmp_path):
    folder = _annotated_folder(tmp_path)
    pred = [1, 2, 1, 3, 4, 1, 0]  # truths are COUNTS = [1, 3, 1, 1, 4, 2, 0]; the tail window is not scored
    report = evaluate_rttm(folder, Scripted(pred))
    w = report.windows
    assert w["true_count"].tolist() == COUNTS and w["pred_count"].tolist() == pred
    assert w["start_s"].tolist() == [0, 5, 10, 15, 20, 25, 30] and report.unannotated == ["unannotated.flac"]
    c = report.counts
    assert c["n"] == 7 and c["accuracy"] == pytest.approx(4 / 7) and c["mae"] == pytest.approx(4 / 7)
    assert {k: v["accuracy"] for k, v in c["per_class"].items()} == pytest.approx(
        {0: 1.0, 1: 2 / 3, 2: 0.0, 3: 0.0, 4: 1.0})
    cm = np.zeros((6, 6), int)
    for t, p in [(1, 1), (3, 2), (1, 1), (1, 3), (4, 4), (2, 1), (0, 0)]:
        cm[t, p] += 1
    np.testing.assert_array_equal(report.count_confusion.to_numpy(), cm)
    # Levels (none 0 | low 1 | moderate 2-3 | active 4+): true [1,2,1,1,3,2,0], predicted [1,2,1,2,3,1,0].
    lv = report.levels
    assert lv["accuracy"] == pytest.approx(5 / 7) and lv["mae"] == pytest.approx(2 / 7)
    assert {k: v["accuracy"] for k, v in lv["per_class"].items()} == pytest.approx(
        {0: 1.0, 1: 2 / 3, 2: 1 / 2, 3: 1.0})
    assert report.level_confusion.loc["low", "moderate"] == 1 and report.level_confusion.loc["moderate", "low"] == 1
    assert report.level_confusion.to_numpy().trace() == 5
    assert json.loads(json.dumps(report.to_dict()))["counts"]["accuracy"] == pytest.approx(4 / 7)
    assert "accuracy 0.571" in report.summary()


def test_evaluate_rttm_with_a_levels_model(tmp_path):
    class Levels(Scripted):
        classes = ["none", "low", "moderate", "active"]

    folder = _annotated_folder(tmp_path)
    report = evaluate_rttm(folder, Levels([1, 2, 1, 2, 3, 1, 0]))  # levels as in the hand computation above
    assert report.counts is None and report.count_confusion is None and report.windows["pred_count"].isna().all()
    assert report.levels["accuracy"] == pytest.approx(5 / 7) and report.level_confusion.to_numpy().trace() == 5
    assert "levels: accuracy 0.714" in report.summary()


def test_score_and_confusion_on_their_own():
    s = score([0, 1, 2, 2], [0, 2, 2, 0], [0, 1, 2])
    assert s["accuracy"] == 0.5 and s["mae"] == 0.75 and s["per_class"][2] == {"n": 2, "accuracy": 0.5}
    assert confusion([0, 1, 2, 2], [0, 2, 2, 0], [0, 1, 2]).to_numpy().tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_evaluate_rttm_bad_input(tmp_path):
    with pytest.raises(MeterError, match="does not exist"):
        evaluate_rttm(tmp_path / "nowhere", Scripted([]))
    sf.write(tmp_path / "a.wav", np.zeros(SR * 6, np.float32), SR)
    with pytest.raises(MeterError, match="no recording"):
        evaluate_rttm(tmp_path, Scripted([]))
    (tmp_path / "a.rttm").write_text("SPEAKER a 1 zero 1.0 <NA> <NA> x <NA> <NA>\n")
    with pytest.raises(MeterError, match="a.rttm:1"):
        evaluate_rttm(tmp_path, Scripted([0]))
    (tmp_path / "a.rttm").write_text("")  # no turns at all: every window holds 0 speakers
    assert evaluate_rttm(tmp_path, Scripted([0])).counts["accuracy"] == 1.0
    with pytest.raises(MeterError, match="10-ms"):
        evaluate_rttm(tmp_path, Scripted([0]), hop_s=2.555)


def test_cli_evaluate_rttm_with_an_exact_counter(tmp_path, capsys):
    """End to end through a saved bundle: the tone counter is exact on the tone recording."""
    folder = _annotated_folder(tmp_path / "data")
    model = save_counter(ToneCounter(5), CLASSES, tmp_path / "tones.pt2")
    out = tmp_path / "report.json"
    assert cli.main(["evaluate-rttm", str(folder), "--model", str(model), "--hop", "2.5", "--out", str(out),
                     "--windows-out", str(tmp_path / "w.csv")]) == 0
    report = json.loads(out.read_text())
    assert report["counts"]["accuracy"] == 1.0 and report["levels"]["accuracy"] == 1.0
    assert report["counts"]["n"] == 13 and "counts: accuracy 1.000" in capsys.readouterr().out
    windows = pd.read_csv(tmp_path / "w.csv")
    assert windows["true_count"].tolist() == window_counts(read_rttm(folder / "tones.rttm").query(
        "file_id == 'tones'"), 5.0, 2.5, DURATION_S)["count"].tolist()
    assert cli.main(["evaluate-rttm", str(folder), "--model", str(model), "--hop", "2.555"]) == 2
    assert "10-ms" in capsys.readouterr().err


def test_evaluate_rttm_on_the_party(tmp_path, party):
    """A real waveform model on the generated party: the report is consistent with its own window table."""
    save_party(party, tmp_path)
    torch.manual_seed(0)
    counter = TorchWindowCounter(tiny_wav2vec2(len(CLASSES), embed_dim=16, layers=1), CLASSES)
    report = evaluate_rttm(tmp_path, counter)
    w = report.windows
    assert len(w) == 12 and w["true_count"].tolist() == window_counts(party.turns, 5.0, 5.0, 60.0)["count"].tolist()
    assert report.counts["accuracy"] == pytest.approx((w["true_count"] == w["pred_count"]).mean())
    assert report.counts["mae"] == pytest.approx((w["true_count"] - w["pred_count"]).abs().mean())
    assert report.count_confusion.to_numpy().sum() == 12 and report.files[0]["speakers"] == len(party.speakers)


# --------------------------------------------------------------------------------------------- issue 30
def test_rttm_of_another_recording_and_turns_past_a_year_are_one_line_errors(tmp_path, capsys):
    """Items 8 and 12: an RTTM whose only file id names another recording is not scored as this one's; an onset of
    1e308 s is refused when parsed (it overflowed the frame grid before); the command line says both in one line."""
    folder = _annotated_folder(tmp_path / "data")
    audio, turns = tone_recording(SEGMENTS, DURATION_S, file_id="someone-else")
    (folder / "tones.rttm").write_text(format_rttm(turns))
    with pytest.raises(MeterError, match="annotates 'someone-else', not 'tones'"):
        evaluate_rttm(folder, Scripted([0] * 20))
    (folder / "tones.rttm").write_text("SPEAKER tones 1 1e308 1.0 <NA> <NA> a <NA> <NA>\n")
    with pytest.raises(MeterError, match=r"tones\.rttm:1: the turn ends at 1e\+308 s"):
        evaluate_rttm(folder, Scripted([0] * 20))
    model = save_counter(ToneCounter(5), CLASSES, tmp_path / "tones.pt2")
    assert cli.main(["evaluate-rttm", str(folder), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "past" in err


def test_evaluate_rttm_output_names_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    """Item 12: --out writes JSON and --windows-out CSV; another suffix is refused before anything is evaluated."""
    import ersam_lib.experiments.rttm_eval as rttm_eval

    folder = _annotated_folder(tmp_path / "data")
    model = save_counter(ToneCounter(5), CLASSES, tmp_path / "tones.pt2")

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the output names were checked")

    monkeypatch.setattr(rttm_eval, "evaluate_rttm", never)
    for option, name in (("--out", "r.txt"), ("--windows-out", "w.json")):
        assert cli.main(["evaluate-rttm", str(folder), "--model", str(model), option, str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err and name in err
        assert not (tmp_path / name).exists()
