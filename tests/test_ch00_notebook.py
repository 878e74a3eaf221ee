"""Chapter 0 (setup check) at SCALE=smoke: the spectrogram chain finds the designed pitch."""

import pytest

from .conftest import chapter_metrics

pytestmark = pytest.mark.notebooks


def test_setup_chapter_metrics(smoke_run: dict) -> None:
    m = chapter_metrics(smoke_run, "00")
    assert m["logmel_shape"] == [64, 501] and m["stft_shape"] == [201, 501]
    assert abs(m["pitch_start_hz"] - m["pitch_start_designed_hz"]) <= 40  # one STFT bin
    assert abs(m["pitch_end_hz"] - m["pitch_end_designed_hz"]) <= 40
    assert m["logmel_ms"] > 0
