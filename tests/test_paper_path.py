"""The paper-scale path a reviewer runs, through the runner, on a miniature LibriSpeech tree at smoke sizes:
LibriSpeech is the paper scale's source, its root comes from ``-p ROOT`` or ``$ERSAM_LIBRISPEECH``, and a missing
root stops chapter 1 at once with one line naming the download command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import data_prep as dp
from data_prep.sources import LibriSpeechSource, SourceError, open_source
from ersam_lib.core.io import read_json

from .test_data_sources import speech, write_librispeech  # noqa: F401 - speech is a fixture

ROOT = Path(__file__).resolve().parents[1]
LIBRICOUNT = ("train-clean-360",) * 3 + ("dev-clean",) * 3 + ("test-clean",) * 3


@pytest.fixture()
def tree(tmp_path, speech):  # noqa: F811 - the imported fixture
    return write_librispeech(tmp_path / "corpus", speech, n_speakers=9, per_speaker=2, subsets=LIBRICOUNT)


def _run(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ERSAM_LIBRISPEECH"} | {"ERSAM_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env | (env_extra or {}))


def test_a_missing_librispeech_root_fails_at_once_naming_the_download(tmp_path):
    start = time.perf_counter()
    out = _run(["ersam_lib", "run", "--scale", "paper", "--run-dir", str(tmp_path / "run"), "--only", "01"])
    assert out.returncode == 1 and time.perf_counter() - start < 120
    first = out.stderr.splitlines()[0]
    assert "SourceError: source 'librispeech' needs a root: set ROOT (-p ROOT DIR) or $ERSAM_LIBRISPEECH" in first
    assert ("`python -m data_prep download --root DIR --subset dev-clean --subset test-clean "
            "--subset train-clean-360`") in first
    assert not (tmp_path / "run" / "data" / "manifest.parquet").exists()
    cli = _run(["data_prep", "build", "--scale", "paper", "--root", str(tmp_path / "nope"), "--out",
                str(tmp_path / "b")])
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1
    assert f"LibriSpeech root {tmp_path / 'nope'} does not exist" in cli.stderr and "data_prep download" in cli.stderr


def test_root_from_the_environment_and_recorded_for_later_chapters(tree, monkeypatch):
    monkeypatch.setenv("ERSAM_LIBRISPEECH", str(tree))
    cfg = dp.DataConfig.for_scale("paper")
    src = open_source(cfg)
    assert isinstance(src, LibriSpeechSource) and src.root == tree
    assert sorted(src.index()["subset"].unique()) == ["dev-clean", "test-clean", "train-clean-360"]
    monkeypatch.setenv("ERSAM_LIBRISPEECH", str(tree / "gone"))
    with pytest.raises(SourceError, match="gone does not exist; download it with"):
        open_source(cfg)


@pytest.mark.notebooks
def test_chapter_1_builds_from_librispeech_through_the_runner(tree, tmp_path):
    run_dir = tmp_path / "run"
    out = _run(["ersam_lib", "run", "--scale", "smoke", "--run-dir", str(run_dir), "--only", "01",
                "-p", "SOURCE", "librispeech", "-p", "ROOT", str(tree)])
    assert out.returncode == 0, out.stderr
    summary = read_json(run_dir / "summary.json")
    assert summary["parameters"] == {"SOURCE": "librispeech", "ROOT": str(tree)}
    m = summary["chapters"]["01_data"]["metrics"]
    assert m["source"] == "librispeech" and m["speaker_overlap_total"] == 0 and m["class_imbalance"] == 0
    assert m["splits"] == ["train", "val", "test", "real_val", "real_test", "real_test_other"]
    info = dp.load_dataset_info(run_dir)
    # LibriCount's subset splits: train-clean-360 speakers train, dev-clean validate, test-clean test
    assert info["speaker_lists"]["train"] == ["librispeech:100", "librispeech:101", "librispeech:102"]
    assert info["speaker_lists"]["test"] == ["librispeech:106", "librispeech:107", "librispeech:108"]
    manifest = dp.load_manifest(run_dir)
    row = manifest[(manifest["split"] == "test") & (manifest["n_drawn"] > 0)].iloc[0]
    assert dp.render_mixture(row, dp.open_run_source(run_dir)).shape == (80_000,)
