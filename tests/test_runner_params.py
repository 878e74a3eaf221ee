"""The runner's ``-p NAME VALUE`` pass-through: checked against each notebook's parameters cell before anything
runs, and passed only to the notebooks that declare the name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ersam_lib.app.runner import chapter_parameters, parse_parameter, run_pipeline
from ersam_lib.core.io import read_json


def _write_notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('SCALE = "tutorial"\nRUN_DIR = "."\nSEED = 0\n' + params,
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "nbs"
    folder.mkdir()
    record = ("from ersam_lib.core.rundir import record_metrics\nfrom ersam_lib.core.stages import Stage\n"
              "record_metrics(RUN_DIR, Stage('t', {ch!r}[:2], {ch!r}, 'a test chapter', metrics={{'seen.*': 'text'}}), "
              "{{'seen': {seen}}})")
    _write_notebook(folder / "01_data.ipynb", 'SOURCE = "tts"\nROOT = None\nK = 3',
                    record.format(ch="01_data", seen="[SOURCE, ROOT, K]"))
    _write_notebook(folder / "02_other.ipynb", "EPOCHS = 1", record.format(ch="02_other", seen="[EPOCHS]"))
    return folder


def test_values_are_typed_as_papermill_types_them():
    assert [parse_parameter(v) for v in ("True", "False", "None", "7", "0.5", "1e-3", "/data/LibriSpeech", "tts")] == \
        [True, False, None, 7, 0.5, 1e-3, "/data/LibriSpeech", "tts"]


def test_each_parameter_goes_only_to_the_notebooks_that_declare_it(notebooks):
    nbs = sorted(notebooks.glob("*.ipynb"))
    routed = chapter_parameters(nbs, {"SOURCE": "librispeech", "EPOCHS": 2})
    assert routed == {"01_data.ipynb": {"SOURCE": "librispeech"}, "02_other.ipynb": {"EPOCHS": 2}}
    assert chapter_parameters(nbs, {}) == {"01_data.ipynb": {}, "02_other.ipynb": {}}
    with pytest.raises(ValueError, match="unknown parameter SOURC: the selected chapters declare EPOCHS, K, ROOT, "
                                         "SOURCE"):
        chapter_parameters(nbs, {"SOURC": "x"})
    with pytest.raises(ValueError, match="SCALE is set with --scale"):
        chapter_parameters(nbs, {"SCALE": "paper"})
    with pytest.raises(ValueError, match="unknown parameter EPOCHS"):  # only the selected chapters count
        chapter_parameters(nbs[:1], {"EPOCHS": 2})


def test_the_runner_passes_parameters_through(notebooks, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_pipeline(run_dir, "smoke", 0, notebooks, timeout_s=300,
                           params={"SOURCE": "librispeech", "ROOT": "/data/LibriSpeech", "EPOCHS": 3})
    metrics = {n: c["metrics"]["seen"] for n, c in summary["chapters"].items()}
    assert metrics == {"01_data": ["librispeech", "/data/LibriSpeech", 3], "02_other": [3]}
    assert read_json(run_dir / "summary.json")["parameters"]["SOURCE"] == "librispeech"


def test_cli_unknown_parameter_is_one_line_before_anything_runs(notebooks, tmp_path):
    run_dir = tmp_path / "run"
    cli = subprocess.run([sys.executable, "-m", "ersam_lib", "run", "--scale", "smoke", "--run-dir", str(run_dir),
                          "--notebooks", str(notebooks), "-p", "SOURCE", "librispeech", "-p", "BATCH", "8"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and not run_dir.exists()
    assert cli.stderr.strip().splitlines() == [
        "[ersam] error: unknown parameter BATCH: the selected chapters declare EPOCHS, K, ROOT, SOURCE"]
    ok = subprocess.run([sys.executable, "-m", "ersam_lib", "run", "--scale", "smoke", "--run-dir", str(run_dir),
                         "--notebooks", str(notebooks), "--only", "02", "-p", "EPOCHS", "5"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert read_json(run_dir / "metrics" / "02_other.json") == {"seen": [5]}
