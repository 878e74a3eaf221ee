"""Chapter 1: the label definition on hand-built activity tracks, class sets, VAD helpers, RTTM windows."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.labels import class_names, class_of, counts_of_class, max_concurrent, overlap_fraction
from data_prep.rttm import RttmError, parse_rttm, window_counts
from data_prep.vad import from_runs, to_runs, trim_bounds, vad_frames


def track(n: int, *spans: tuple[int, int]) -> np.ndarray:
    t = np.zeros(n, bool)
    for a, b in spans:
        t[a:b] = True
    return t


def test_label_is_max_concurrency_not_speakers_drawn():
    # three speakers who take turns: never more than two at once -> k = 2 although 3 were drawn
    act = np.stack([track(100, (0, 40)), track(100, (30, 70)), track(100, (60, 100))])
    assert max_concurrent(act) == 2
    # all three overlap in frames 30..40
    act[2, 35] = True
    assert max_concurrent(act) == 3
    # strictly alternating turns -> 1
    assert max_concurrent(np.stack([track(10, (0, 5)), track(10, (5, 10))])) == 1
    assert max_concurrent(np.zeros((0, 500), bool)) == 0
    with pytest.raises(ValueError):
        max_concurrent(np.zeros(5, bool))


def test_overlap_fraction():
    act = np.stack([track(100, (0, 50)), track(100, (25, 75))])
    # speech in frames 0..75 (75 frames), overlap in 25..50 (25 frames)
    assert overlap_fraction(act) == pytest.approx(25 / 75)
    assert overlap_fraction(np.zeros((2, 10), bool)) == 0.0


def test_class_sets():
    assert class_names("counts", 3) == ["0", "1", "2", "3"]
    assert class_of(3, "counts", 3) == 3 and class_of(4, "counts", 3) == -1
    assert class_names("levels", 10) == ["none", "low", "moderate", "active"]
    assert [class_of(k, "levels", 10) for k in range(7)] == [0, 1, 2, 2, 3, 3, 3]
    assert counts_of_class(2, "levels", 10) == [2, 3]
    assert counts_of_class(3, "levels", 6) == [4, 5, 6]
    with pytest.raises(ValueError, match="class_set"):
        class_names("bins", 3)


def test_runs_roundtrip_and_trim():
    t = track(50, (3, 9), (20, 21), (45, 50))
    assert to_runs(t) == [[3, 9], [20, 21], [45, 50]]
    assert np.array_equal(from_runs(to_runs(t), 50), t)
    assert trim_bounds(t) == (3, 50)
    assert trim_bounds(np.zeros(5, bool)) is None


def test_vad_silence_and_frame_count():
    silence = np.zeros(16000 + 100, np.float32)
    v = vad_frames(silence)
    assert v.shape == (100,) and not v.any()
    with pytest.raises(ValueError, match="16000"):
        vad_frames(silence, sample_rate=8000)


RTTM = """\
;; a comment
SPEAKER rec1 1 0.00 4.00 <NA> <NA> alice <NA> <NA>
SPEAKER rec1 1 3.00 4.00 <NA> <NA> bob <NA> <NA>
SPEAKER rec1 1 3.50 1.00 <NA> <NA> carol <NA> <NA>
SPEAKER rec1 1 6.00 3.00 <NA> <NA> alice <NA> <NA>
SPKR-INFO rec1 1 <NA> <NA> <NA> unknown alice <NA> <NA>
SPEAKER rec2 1 1.00 2.00 <NA> <NA> dan <NA> <NA>
"""


def test_rttm_windows_count_max_concurrency():
    turns = parse_rttm(RTTM)
    assert len(turns) == 5 and set(turns["speaker"]) == {"alice", "bob", "carol", "dan"}
    w = window_counts(turns, window_s=5.0, duration_s=10.0)
    rec1 = w[w.file_id == "rec1"].reset_index(drop=True)
    assert rec1["start_s"].tolist() == [0.0, 5.0]
    # window 0-5: alice, bob and carol overlap at 3.5-4.0 -> 3; window 5-10: bob until 7, alice from 6 -> 2
    assert rec1["count"].tolist() == [3, 2]
    assert rec1["n_speakers"].tolist() == [3, 2]
    rec2 = w[w.file_id == "rec2"]
    assert rec2["count"].tolist() == [1, 0]
    # hop < window gives overlapping windows
    assert len(window_counts(turns[turns.file_id == "rec1"], 5.0, 2.5, duration_s=10.0)) == 3


def test_rttm_bad_lines_name_the_line(tmp_path):
    with pytest.raises(RttmError, match=":2:"):
        parse_rttm("SPEAKER a 1 0 1 <NA> <NA> x <NA> <NA>\nSPEAKER a 1 zero 1 <NA> <NA> y <NA> <NA>\n")
    with pytest.raises(RttmError, match="8 fields"):
        parse_rttm("SPEAKER a 1 0 1\n")
    with pytest.raises(FileNotFoundError):
        from data_prep.rttm import read_rttm

        read_rttm(tmp_path / "missing.rttm")


@pytest.mark.parametrize("onset, duration", [("nan", "1.0"), ("0.5", "inf"), ("-inf", "1"), ("0", "NaN")])
def test_rttm_refuses_non_finite_times(onset, duration):
    with pytest.raises(RttmError, match=r"x\.rttm:2: onset and duration must be finite"):
        parse_rttm(f"SPEAKER a 1 0 1 <NA> <NA> x <NA> <NA>\nSPEAKER a 1 {onset} {duration} <NA> <NA> y <NA> <NA>\n",
                   "x.rttm")


def test_rttm_that_is_not_utf8_names_the_file_and_line(tmp_path):
    from data_prep.rttm import read_rttm

    path = tmp_path / "meeting.rttm"
    path.write_bytes(b"SPEAKER a 1 0 1 <NA> <NA> x <NA> <NA>\nSPEAKER a 1 0 1 <NA> <NA> \xff\xfe <NA> <NA>\n")
    with pytest.raises(RttmError, match=r"meeting\.rttm:2: not UTF-8"):
        read_rttm(path)


@pytest.mark.parametrize("kwargs", [{"hop_s": 0}, {"hop_s": -1.0}, {"hop_s": 0.004}, {"hop_s": 0.015},
                                    {"window_s": 0}, {"window_s": float("nan")}, {"duration_s": -2.0}])
def test_windows_refuse_impossible_sizes(kwargs):
    with pytest.raises(ValueError, match="window_s|hop_s|duration_s"):
        window_counts(parse_rttm(RTTM), **kwargs)
