"""The papermill runner: order, selection, summary, and failures that name the notebook and the cell."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from ersam_lib.app.runner import NotebookFailed, run_pipeline, select_notebooks
from ersam_lib.core.io import read_json
from ersam_lib.core.repro import MALLOC_ENV, training_env


def _write_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# {path.stem}"),
        nbformat.v4.new_code_cell('SCALE = "tutorial"\nRUN_DIR = "."\nSEED = 0', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


# A chapter of the tests' own, declared where it is used (a Stage need not be in the book's registry).
STAGE = ("from ersam_lib.core.rundir import record_metrics\nfrom ersam_lib.core.stages import Stage\n"
         "STAGE = Stage({notebook!r}[3:], {notebook!r}[:2], {notebook!r}, 'a test chapter', "
         "metrics={{'scale': 'text', 'seed': 'count', 'malloc.*': 'version'}})\n")
RECORD = STAGE + "record_metrics(RUN_DIR, STAGE, {{'scale': SCALE, 'seed': SEED}})"


@pytest.fixture()
def notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "01_first.ipynb", RECORD.format(notebook="01_first"))
    _write_notebook(folder / "02_second.ipynb", RECORD.format(notebook="02_second") + "\nx = 1 + 1")
    return folder


def test_runs_in_order_and_records_metrics(notebooks: Path, tmp_path: Path, monkeypatch) -> None:
    for name in MALLOC_ENV:  # as when the runner is started without make: it sets them for the kernels itself
        monkeypatch.delenv(name, raising=False)
    _write_notebook(notebooks / "02_second.ipynb", "import os\n" + STAGE.format(notebook="02_second") +
                    "record_metrics(RUN_DIR, STAGE, {'scale': SCALE, 'seed': SEED, "
                    f"'malloc': {{k: os.environ.get(k) for k in {sorted(MALLOC_ENV)!r}}}}})")
    run_dir = tmp_path / "run"
    summary = run_pipeline(run_dir, "smoke", 7, notebooks, timeout_s=300)
    assert list(summary["chapters"]) == ["01_first", "02_second"]
    on_disk = read_json(run_dir / "summary.json")
    assert on_disk["chapters"]["02_second"]["metrics"].pop("malloc") == MALLOC_ENV
    assert {k: on_disk["environment"][k] for k in MALLOC_ENV} == MALLOC_ENV  # recorded for reviewers
    import torch  # the instruction set recorded is the one torch's CPU kernels use here

    assert on_disk["environment"]["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert on_disk["environment"]["cpu"]
    for entry in on_disk["chapters"].values():
        assert entry["status"] == "ok" and entry["wall_s"] > 0
        assert entry["metrics"] == {"scale": "smoke", "seed": 7}  # injected parameters reached the kernel
        assert (run_dir / entry["executed"]).exists() and (run_dir / entry["log"]).exists()
    # --only reruns one chapter and keeps the other's entry
    run_pipeline(run_dir, "smoke", 7, notebooks, only="02", timeout_s=300)
    assert set(read_json(run_dir / "summary.json")["chapters"]) == {"01_first", "02_second"}
    with pytest.raises(ValueError, match="SCALE=smoke"):
        run_pipeline(run_dir, "tutorial", 7, notebooks, only="02")


def test_malloc_settings_are_the_makefiles_and_yield_to_the_callers() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    exported = dict(line.split()[1::2] for line in makefile.splitlines() if line.startswith("export MALLOC_"))
    assert exported == MALLOC_ENV  # `make test`/`make book` and the runner's kernels allocate the same way
    assert training_env({"MALLOC_TRIM_THRESHOLD_": "0", "PATH": "/bin"}) == {
        "MALLOC_MMAP_THRESHOLD_": MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"], "MALLOC_TRIM_THRESHOLD_": "0", "PATH": "/bin"}


def test_selection() -> None:
    paths = [Path(f"{i:02d}_x.ipynb") for i in range(4)]
    assert select_notebooks(paths, only="2") == [paths[2]]
    assert select_notebooks(paths, from_="01") == paths[1:]
    with pytest.raises(ValueError, match="no chapter 09"):
        select_notebooks(paths, only="09")


def test_failing_cell_is_named_and_partial_copy_kept(notebooks: Path, tmp_path: Path) -> None:
    _write_notebook(notebooks / "02_second.ipynb", "y = 2\nraise ZeroDivisionError('deliberate failure')")
    _write_notebook(notebooks / "03_never.ipynb", RECORD.format(notebook="03_never"))
    run_dir = tmp_path / "run"
    with pytest.raises(NotebookFailed) as info:
        run_pipeline(run_dir, "smoke", 0, notebooks, timeout_s=300)
    message = str(info.value)
    assert "02_second.ipynb" in message and "code cell 3" in message and "deliberate failure" in message
    summary = read_json(run_dir / "summary.json")
    assert summary["chapters"]["02_second"]["status"] == "failed"
    assert "03_never" not in summary["chapters"]  # the run stopped at the failure
    assert (run_dir / "executed" / "02_second.ipynb").exists()

    cli = subprocess.run([sys.executable, "-m", "ersam_lib", "run", "--scale", "smoke", "--run-dir",
                          str(tmp_path / "run2"), "--notebooks", str(notebooks)], capture_output=True, text=True)
    assert cli.returncode == 1
    assert "02_second.ipynb" in cli.stderr and "ZeroDivisionError: deliberate failure" in cli.stderr
    resume = cli.stderr.strip().splitlines()[-1]
    assert resume.endswith(f"--run-dir {tmp_path / 'run2'} --notebooks {notebooks} --from 02")
    assert "--timeout" not in resume  # a failure, not a timeout: the same limit


def test_notebook_timeout(notebooks: Path, tmp_path: Path) -> None:
    _write_notebook(notebooks / "01_first.ipynb", "import time\ntime.sleep(60)")
    with pytest.raises(NotebookFailed, match="timed out after 15 s"):
        run_pipeline(tmp_path / "run", "smoke", 0, notebooks, only="01", timeout_s=15)
    entry = read_json(tmp_path / "run" / "summary.json")["chapters"]["01_first"]
    assert entry["status"] == "timeout" and entry["error"]["cell"] == 3
    assert json.dumps(entry)  # the summary stays valid JSON after a kill
    cli = subprocess.run(_cli("run", "--scale", "smoke", "--run-dir", str(tmp_path / "run"), "--notebooks",
                              str(notebooks), "--only", "01", "--timeout", "10"), capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stderr.strip().splitlines()[-1].endswith("--timeout 20 --from 01")


HEARTBEAT = ("import time, pathlib\nfor i in range(120):\n"
             "    pathlib.Path(RUN_DIR, 'heartbeat').write_text(str(i))\n    time.sleep(0.5)")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ersam_lib", *args]


def _start_heartbeat_run(notebooks: Path, run_dir: Path) -> subprocess.Popen:
    """A run of one chapter that writes RUN_DIR/heartbeat for a minute, returned once its kernel is writing."""
    _write_notebook(notebooks / "01_first.ipynb", HEARTBEAT)
    proc = subprocess.Popen(_cli("run", "--scale", "smoke", "--run-dir", str(run_dir), "--notebooks", str(notebooks)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(240):
        if (run_dir / "heartbeat").exists():
            break
        time.sleep(0.5)
    return proc


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_papermill_and_the_kernel_and_is_recorded(notebooks: Path, tmp_path: Path, sig, code) -> None:
    import psutil

    run_dir = tmp_path / "run"
    proc = _start_heartbeat_run(notebooks, run_dir)
    assert read_json(run_dir / "summary.json")["chapters"]["01_first"]["status"] == "running"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # papermill and the kernel
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and f"interrupted by {sig.name}" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.info for p in alive]
    beat = (run_dir / "heartbeat").read_text()
    time.sleep(1.5)
    assert (run_dir / "heartbeat").read_text() == beat  # nobody writes the run folder any more
    summary = read_json(run_dir / "summary.json")
    assert summary["chapters"]["01_first"]["status"] == "interrupted" and "02_second" not in summary["chapters"]


def test_papermill_killed_from_outside_is_an_interruption_not_a_failure(notebooks: Path, tmp_path: Path) -> None:
    import psutil

    run_dir = tmp_path / "run"
    proc = _start_heartbeat_run(notebooks, run_dir)
    papermill = psutil.Process(proc.pid).children()[0]
    kernels = papermill.children(recursive=True)
    papermill.terminate()  # as `pkill -f RUN_DIR` or the OOM killer would: the runner itself gets no signal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err and "Traceback" not in err
    assert read_json(run_dir / "summary.json")["chapters"]["01_first"]["status"] == "interrupted"
    _, alive = psutil.wait_procs(kernels, timeout=30)
    assert not alive, [p.info for p in alive]  # the orphaned kernel exits by itself


def test_two_chapters_at_once_keep_both_entries(notebooks: Path, tmp_path: Path) -> None:
    for name in ("01_first", "02_second"):
        _write_notebook(notebooks / f"{name}.ipynb", "import time\ntime.sleep(2)\n" + RECORD.format(notebook=name))
    run_dir = tmp_path / "run"
    procs = [subprocess.Popen(_cli("run", "--scale", "smoke", "--run-dir", str(run_dir), "--notebooks", str(notebooks),
                                   "--only", ch), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for ch in ("01", "02")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    chapters = read_json(run_dir / "summary.json")["chapters"]
    assert set(chapters) == {"01_first", "02_second"} and {c["status"] for c in chapters.values()} == {"ok"}


def test_damaged_summary_and_impossible_values_are_one_line_errors(notebooks: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"run_dir": "x", "sca')
    cli = subprocess.run(_cli("run", "--scale", "smoke", "--run-dir", str(run_dir), "--notebooks", str(notebooks)),
                         capture_output=True, text=True)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1
    assert "summary.json is not valid JSON" in cli.stderr and "--scale smoke --seed 0" in cli.stderr
    (tmp_path / "afile").write_text("x")
    for args, words in ((["--timeout", "0"], "--timeout"), (["--cell-timeout", "-1"], "--cell-timeout"),
                        (["--timeout", "nan"], "--timeout"), (["--seed", "-1"], "--seed"),
                        (["--run-dir", str(tmp_path / "afile")], "is a file")):
        argv = ["run", "--scale", "smoke", "--run-dir", str(tmp_path / "fresh"), "--notebooks", str(notebooks), *args]
        cli = subprocess.run(_cli(*argv), capture_output=True, text=True)
        assert cli.returncode == 2 and words in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
    for args in (["--epochs", "0"], ["--tau", "1.5"], ["--seed", "-3"]):
        cli = subprocess.run(_cli("train", "--run-dir", str(tmp_path), *args), capture_output=True, text=True)
        assert cli.returncode == 2 and args[0] in cli.stderr and "Traceback" not in cli.stderr


def test_cell_timeout_below_a_second_is_a_limit_not_none(notebooks: Path, tmp_path: Path) -> None:
    _write_notebook(notebooks / "01_first.ipynb", "import time\ntime.sleep(20)")
    with pytest.raises(NotebookFailed, match="timed out after 1 s"):
        run_pipeline(tmp_path / "run", "smoke", 0, notebooks, only="01", timeout_s=120, cell_timeout_s=0.9)
    assert read_json(tmp_path / "run" / "summary.json")["chapters"]["01_first"]["status"] == "timeout"


# --------------------------------------------------------------------------------------------- issue 30
def test_no_file_is_written_through_a_link_planted_in_the_run_folder(notebooks: Path, tmp_path: Path) -> None:
    """Item 6: logs/ and executed/ entries that are symbolic links to files outside the run folder are replaced by
    the runner's own files; the files they pointed to keep their contents."""
    run_dir = tmp_path / "run"
    outside = {name: tmp_path / f"outside-{name}" for name in ("log", "ipynb")}
    for path in outside.values():
        path.write_text("precious\n")
    for sub, name, target in (("logs", "01_first.log", outside["log"]),
                              ("executed", "01_first.ipynb", outside["ipynb"])):
        (run_dir / sub).mkdir(parents=True)
        (run_dir / sub / name).symlink_to(target)
    run_pipeline(run_dir, "smoke", 0, notebooks, only="01", timeout_s=300)
    assert all(path.read_text() == "precious\n" for path in outside.values())
    for path in (run_dir / "logs" / "01_first.log", run_dir / "executed" / "01_first.ipynb"):
        assert not path.is_symlink() and path.stat().st_size > 0


def test_a_killed_runner_leaves_no_orphans_and_no_chapter_running_forever(notebooks: Path, tmp_path: Path) -> None:
    """Item 7: SIGKILL of the runner (it cannot clean up) takes papermill and its kernel down with it (Linux's
    parent-death signal), and the next runner marks the chapter it left 'running' as interrupted."""
    import psutil

    run_dir = tmp_path / "run"
    proc = _start_heartbeat_run(notebooks, run_dir)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # papermill and the kernel
    proc.kill()
    proc.communicate(timeout=60)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.info for p in alive]
    beat = (run_dir / "heartbeat").read_text()
    time.sleep(1.5)
    assert (run_dir / "heartbeat").read_text() == beat  # nobody writes the run folder any more
    assert read_json(run_dir / "summary.json")["chapters"]["01_first"]["status"] == "running"  # what it left
    _write_notebook(notebooks / "02_second.ipynb", RECORD.format(notebook="02_second"))
    run_pipeline(run_dir, "smoke", 0, notebooks, only="02", timeout_s=300)
    entry = read_json(run_dir / "summary.json")["chapters"]["01_first"]
    assert entry["status"] == "interrupted" and "runner died" in entry["error"]["message"]


def test_empty_chapter_selections_are_errors_and_done_counts_what_ran(notebooks: Path, tmp_path: Path) -> None:
    """Items 9 and 12: --only '' and --from '' select nothing (an error, not every chapter); after --only 01 the
    runner says it ran one chapter."""
    paths = [Path(f"{i:02d}_x.ipynb") for i in range(4)]
    for kwargs in ({"only": ""}, {"from_": ""}, {"only": " "}, {"from_": "x"}):
        with pytest.raises(ValueError, match="needs a chapter number"):
            select_notebooks(paths, **kwargs)
    for flag in ("--only", "--from"):
        cli = subprocess.run(_cli("run", "--scale", "smoke", "--run-dir", str(tmp_path / "r"), "--notebooks",
                                  str(notebooks), flag, "", "-p", "NOPE", "1"), capture_output=True, text=True)
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "needs a chapter number" in cli.stderr
    cli = subprocess.run(_cli("run", "--scale", "smoke", "--run-dir", str(tmp_path / "r"), "--notebooks",
                              str(notebooks), "--only", "01"), capture_output=True, text=True)
    assert cli.returncode == 0 and "done: 1 chapter (01)," in cli.stdout, cli.stdout


def test_resume_lines_are_shell_quoted(notebooks: Path, tmp_path: Path) -> None:
    """Item 5: a run folder with a space and a non-ASCII letter and a -p value that holds a command substitution:
    the printed resume line, pasted into a shell, gives back exactly those arguments and runs nothing."""
    import shlex

    _write_notebook(notebooks / "01_first.ipynb", "ROOT = None\nraise ValueError('stop here')")
    nb = json.loads((notebooks / "01_first.ipynb").read_text())
    nb["cells"][1]["source"] = 'SCALE = "tutorial"\nRUN_DIR = "."\nSEED = 0\nROOT = None'
    (notebooks / "01_first.ipynb").write_text(json.dumps(nb))
    run_dir = tmp_path / "sp ace ü"
    hostile = "$(touch pwned)"
    cli = subprocess.run(_cli("run", "--scale", "smoke", "--run-dir", str(run_dir), "--notebooks", str(notebooks),
                              "-p", "ROOT", hostile), capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 1, cli.stderr
    line = cli.stderr.strip().splitlines()[-1].split(": ", 1)[1]
    argv = shlex.split(line)
    assert argv[argv.index("--run-dir") + 1] == str(run_dir) and argv[argv.index("ROOT") + 1] == hostile
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\n' {line.removeprefix('python ')}"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert echoed.stdout.splitlines() == argv[1:] and not (tmp_path / "pwned").exists()


def test_a_full_disk_during_a_chapter_is_recorded_with_a_resume_line(notebooks: Path, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    """Item 11: an OSError of the runner itself (no space for the log, the summary) ends the chapter as failed with
    the error, and the command line prints the file and the resume line instead of leaving it 'running'."""
    import errno

    from ersam_lib.app import cli, runner

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, f"no space left on the device writing {tmp_path / 'run' / 'logs' / 'x.log'}")

    monkeypatch.setattr(runner.subprocess, "Popen", full)
    assert cli.main(["run", "--scale", "smoke", "--run-dir", str(tmp_path / "run"), "--notebooks", str(notebooks),
                     "--only", "01"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device writing" in err and "x.log" in err and "--from 01" in err
    entry = read_json(tmp_path / "run" / "summary.json")["chapters"]["01_first"]
    assert entry["status"] == "failed" and "no space left" in entry["error"]["message"]
