"""Damaged weights never reach ``ok`` (issue 30, items 2 and 3): flipped bits in a float still load, so every weight
file of a run is checked against the SHA-256 recorded beside it. A damaged supernet or chosen model stops its reader
with one line naming the file and the command that rebuilds it; a damaged cache (a training checkpoint, a trained
baseline) is trained again, never resumed from. Run on a copy of the session's smoke run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ersam_lib.core.io import ArtifactError, read_json
from ersam_lib.experiments.frontier import load_chosen
from ersam_lib.experiments.search import Objectives, run_search_setup
from ersam_lib.measure.data import load_feature_data
from ersam_lib.models.supernet import load_supernet, save_supernet
from ersam_lib.training.fit import FitConfig, fit_baseline

from .hostile import flip_exponents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run_copy(smoke_run_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(smoke_run_dir, run, ignore=shutil.ignore_patterns("executed", "logs", "deploy"))
    return run


def _one_line_naming(err: pytest.ExceptionInfo, path: Path, chapter: str) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"--only {chapter}" in message, message
    assert "does not match the SHA-256" in message


def test_a_damaged_supernet_stops_chapter_5_and_the_resume_line_rebuilds_it(run_copy: Path) -> None:
    path = run_copy / "supernet" / "supernet.pt"
    torch.load(path, weights_only=True)  # the control: it loads before and after the damage
    assert flip_exponents(path) > 100
    torch.load(path, weights_only=True)
    with pytest.raises(ArtifactError) as err:
        load_supernet(run_copy)
    _one_line_naming(err, path, "04")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERSAM_PROGRESS": "0"}
    run = subprocess.run([sys.executable, "-m", "ersam_lib", "run", "--scale", "smoke", "--run-dir", str(run_copy),
                          "--only", "05", "--timeout", "600"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 1 and "supernet.pt does not match the SHA-256" in run.stderr, run.stderr[-3000:]
    assert "resume at chapter 04, which rebuilds the file it names" in run.stderr and "--from 04" in run.stderr
    assert read_json(run_copy / "summary.json")["chapters"]["05_search"]["status"] == "failed"


def test_a_damaged_chosen_model_stops_chapter_6(run_copy: Path) -> None:
    name = read_json(run_copy / "search" / "chosen.json")["budget"]
    path = run_copy / "search" / "models" / f"{name}.pt"
    load_chosen(run_copy, name)
    intact = path.read_bytes()
    flip_exponents(path, every=3)
    with pytest.raises(ArtifactError) as err:
        load_chosen(run_copy, name)
    _one_line_naming(err, path, "05")
    assert str(err.value).count(str(path)) == 1
    path.write_bytes(intact)
    path.with_name(path.name + ".sha256").unlink()  # no digest record beside the weights: refused as well
    with pytest.raises(ArtifactError, match="no readable digest record"):
        load_chosen(run_copy, name)


def test_a_damaged_baseline_cache_is_trained_again(run_copy: Path, tmp_path: Path, capsys) -> None:
    data = load_feature_data(run_copy)
    cfg = FitConfig.for_scale("smoke", max_train_samples=32)
    folder = tmp_path / "baselines"
    first, report = fit_baseline("tcresnet8", data, cfg, folder, device="cpu")
    stamp = (folder / "tcresnet8.pt").stat().st_mtime_ns
    assert fit_baseline("tcresnet8", data, cfg, folder, device="cpu")[1] == report  # reused, not trained
    assert (folder / "tcresnet8.pt").stat().st_mtime_ns == stamp
    flip_exponents(folder / "tcresnet8.pt", every=3)
    again, _ = fit_baseline("tcresnet8", data, cfg, folder, device="cpu")
    assert "does not match the SHA-256" in capsys.readouterr().out
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):  # the same training, from scratch
        assert torch.equal(a, b)


def test_a_stale_objectives_cache_is_scored_afresh_when_chapter_5_runs_again(run_copy: Path, capsys) -> None:

    path = run_copy / "search" / "objectives.json"
    run_search_setup(run_copy).objectives.save()  # the cache as chapter 5 leaves it
    capsys.readouterr()
    tag = run_search_setup(run_copy).objectives.tag
    assert read_json(path)["tag"] == tag and "scoring afresh" not in capsys.readouterr().out  # current: reused
    # chapter 4 run again over its finished checkpoints saves the same weights: the cache still holds
    supernet = run_copy / "supernet" / "supernet.pt"
    net, space, info = load_supernet(run_copy)
    save_supernet(supernet, net, space, info)
    assert run_search_setup(run_copy).objectives.tag == tag and "scoring afresh" not in capsys.readouterr().out
    # chapter 4 ran again and made another supernet: the cache's tag names the old one
    doc = read_json(path) | {"tag": tag.replace("supernet=", "supernet=0ld")}
    path.write_text(json.dumps(doc))
    setup = run_search_setup(run_copy)
    assert "was computed from another supernet" in capsys.readouterr().out and not path.exists()
    assert setup.objectives.counts["acc_hits"] == 0 and len(setup.objectives.accuracy(setup.space.smallest())) > 0
    assert read_json(path)["tag"] == tag  # the fresh cache is written under the current tag
    path.write_text("{not json")  # a damaged cache is set aside too
    run_search_setup(run_copy)
    assert "scoring afresh" in capsys.readouterr().out
    path.write_text(json.dumps(doc))  # a caller's own cache under another tag is still refused
    with pytest.raises(ValueError, match="was written for tag"):
        Objectives(lambda a: {"acc": 0.0}, lambda a: {}, path, tag)
