"""The pipeline runner: executes the chapter notebooks in order with papermill (chapter 0, "How to run the book").

Each notebook ``notebooks/NN_name.ipynb`` runs in its own papermill process with ``SCALE``, ``RUN_DIR`` and ``SEED``
injected, a wall-clock limit per notebook (and per cell), its output streamed to ``RUN_DIR/logs/NN_name.log``, and
its executed copy written to ``RUN_DIR/executed/NN_name.ipynb`` (kept when it fails, for the post-mortem). A failure
stops the run and names the notebook, the cell and the error. Further chapter parameters (papermill's
``-p NAME VALUE``, e.g. ``-p SOURCE librispeech``) go only to the notebooks whose parameters cell declares them
(:func:`chapter_parameters`).

``RUN_DIR/summary.json`` is the run's record, updated under a file lock and atomically (two chapters run at once
keep both entries): a chapter is marked ``running`` when it starts, then ``ok``, ``failed``, ``timeout`` or
``interrupted`` with its wall time, the metrics it recorded with :func:`ersam_lib.core.rundir.record_metrics` and the
SHA-256 of its executed copy (what the book checks before rendering it).

The runner owns its children: on SIGINT (Ctrl-C) or SIGTERM, on a timeout too, it kills papermill *and* the kernel
(jupyter_client starts the kernel in a session of its own, so it is found through the process tree, not the
process group), records ``interrupted`` and raises :class:`RunInterrupted`; nothing keeps writing the run folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from ..core.io import ArtifactError, read_json, sha256_file, update_json
from ..core.repro import MALLOC_ENV, training_env
from ..core.rundir import (check_run_dir, executed_path, load_metrics, log_path, metrics_path, summary_path,
                           summary_problem)
from ..core.scales import check_scale
from ..core.stages import STAGES, find_stage

__all__ = [
    "ChapterResult", "chapter_parameters", "discover_notebooks", "environment_info", "execute_notebook", "kill_tree",
    "locate_error", "mark_dead_runners", "NotebookFailed", "parse_parameter", "runner_alive", "RunInterrupted",
    "run_pipeline", "select_notebooks"
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NOTEBOOKS = REPO_ROOT / "notebooks"
RESERVED = {"SCALE": "--scale", "RUN_DIR": "--run-dir", "SEED": "--seed"}  # the runner injects these itself


@dataclass
class ChapterResult:
    """What the run summary keeps about one executed notebook."""

    status: str  # "running" | "ok" | "failed" | "timeout" | "interrupted"
    wall_s: float
    executed: str
    log: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    executed_sha256: str | None = None  # of the executed copy, so the book renders exactly what ran
    started: str | None = None
    runner: dict[str, Any] | None = None  # while running: host, pid and start time of the runner (runner_alive)


class NotebookFailed(RuntimeError):
    """A chapter notebook raised or timed out; the message names the notebook, the cell and the error."""

    def __init__(self, notebook: str, result: ChapterResult):
        self.notebook = notebook
        self.result = result
        err = result.error or {}
        where = (f"code cell {err['cell']} of the executed copy" if err.get("cell") is not None
                 else "an unknown cell")
        super().__init__(
            f"notebook {notebook} {result.status} in {where}: {err.get('message', '')}\n"
            f"  source: {err.get('source', '').strip()[:200]}\n"
            f"  executed copy: {result.executed}\n  log: {result.log}"
        )


class RunInterrupted(NotebookFailed):
    """SIGINT or SIGTERM stopped the run; the chapter it was running is marked ``interrupted``."""

    def __init__(self, notebook: str, result: ChapterResult, signum: int):
        super().__init__(notebook, result)
        self.signum = signum
        self.args = (f"interrupted by {signal.Signals(signum).name} in {notebook}; papermill and its kernel were "
                     f"stopped, the chapter is marked 'interrupted' in summary.json",)


def discover_notebooks(notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS) -> list[Path]:
    """The chapter notebooks (``NN_*.ipynb``) in execution order."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks folder {notebooks_dir} does not exist")
    found = sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no chapter notebooks (NN_*.ipynb) in {notebooks_dir}")
    return found


def select_notebooks(notebooks: list[Path], only: str | None = None, from_: str | None = None) -> list[Path]:
    """Filter by chapter number or stage label: ``only="2"`` or ``only="profiling"`` runs chapter 02 alone,
    ``from_="03"`` resumes at chapter 03.

    ``None`` means "not given"; an empty or blank chapter is an error, not "every chapter"."""
    if only is not None and from_ is not None:
        raise ValueError("give --only or --from, not both")
    if only is None and from_ is None:
        return notebooks
    flag, key = ("--only", only) if only is not None else ("--from", from_)
    prefixes = [p.name[:2] for p in notebooks]
    key = str(key).strip()
    labelled = find_stage(key) if key and not key.isdigit() else None
    if labelled is not None:
        key = labelled.chapter
    if not key.isdigit():
        raise ValueError(f"{flag} needs a chapter number such as {prefixes[-1]} (or a stage label: "
                         f"{', '.join(s.label for s in STAGES)}), got {key!r}")
    key = key.zfill(2)
    if key not in prefixes:
        raise ValueError(f"{flag}: no chapter {key}; chapters are {', '.join(prefixes)}")
    if only is not None:
        return [p for p in notebooks if p.name[:2] == key]
    return [p for p in notebooks if p.name[:2] >= key]


def parse_parameter(text: str) -> Any:
    """A ``-p`` value typed as papermill types it: True, False, None, an int, a float, else the string."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def chapter_parameters(notebooks: list[Path], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """notebook name -> the ``params`` its parameters cell declares (only those go to it).

    A name no selected notebook declares, or one the runner sets itself, is a ``ValueError`` raised before
    anything runs.
    """
    for name, flag in RESERVED.items():
        if name in params:
            raise ValueError(f"parameter {name} is set with {flag}, not -p")
    if not params:
        return {nb.name: {} for nb in notebooks}
    from papermill.inspection import inspect_notebook  # reads the parameters cell without running anything

    declared = {nb.name: set(inspect_notebook(str(nb))) for nb in notebooks}
    unknown = sorted(set(params) - set().union(*declared.values()))
    if unknown:
        known = sorted(set().union(*declared.values()) - set(RESERVED))
        raise ValueError(f"unknown parameter {', '.join(unknown)}: the selected chapters declare "
                         f"{', '.join(known) or 'none'}")
    return {nb: {k: v for k, v in params.items() if k in names} for nb, names in declared.items()}


def environment_info() -> dict[str, str]:
    """Versions and machine facts recorded in the summary, so that a reviewer can compare numbers fairly."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for dist in ("torch", "torchaudio", "numpy", "papermill", "executorch", "onnxruntime"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # a missing backend is a fact to record, not an error
            info[dist] = "not installed"
    info |= _cpu_info()
    kernel_env = training_env()
    return info | {name: kernel_env[name] for name in MALLOC_ENV}  # how the kernels' malloc was set


def _cpu_info() -> dict[str, str]:
    """The CPU's model and the vector instruction set PyTorch's CPU kernels pick on it (``AVX512``, ``AVX2``,
    ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` overrides it as it does for torch): CPU training repeats bit for bit only on
    the same one, so a reviewer needs it to read a comparison. Read from ``/proc/cpuinfo``, without importing torch."""
    model, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":  # the first processor's: its flags line ends the loop
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        capability = "AVX512"
    elif {"avx2", "fma"} <= flags:
        capability = "AVX2"
    else:
        capability = "DEFAULT" if flags else "unknown"
    capability = os.environ.get("ATEN_CPU_CAPABILITY", capability).upper()
    return {"cpu": model, "cpu_capability": capability}


def run_pipeline(
    run_dir: str | os.PathLike,
    scale: str = "tutorial",
    seed: int = 0,
    notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS,
    only: str | None = None,
    from_: str | None = None,
    timeout_s: float = 3600.0,
    cell_timeout_s: float | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute the selected notebooks in order; return the run summary (also written to ``RUN_DIR/summary.json``).

    ``params`` are further chapter parameters (``-p NAME VALUE``), each passed to the notebooks that declare it.
    Raises :class:`NotebookFailed` at the first failing notebook, after recording it in the summary, and
    :class:`RunInterrupted` (after stopping papermill and the kernel) on SIGINT or SIGTERM.
    """
    scale = check_scale(scale)
    for name, value in (("timeout_s", timeout_s), ("cell_timeout_s", cell_timeout_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
    run_dir = Path(run_dir).resolve()
    notebooks = select_notebooks(discover_notebooks(notebooks_dir), only=only, from_=from_)
    routed = chapter_parameters(notebooks, params or {})
    check_run_dir(run_dir)  # created only now: a bad parameter leaves nothing on disk
    summary = _open_summary(run_dir, scale, seed, params or {})
    with _stop_on_signals() as stop:
        for nb in notebooks:
            if stop:  # a signal between two chapters: the next one does not start
                raise RunInterrupted(nb.name, ChapterResult("interrupted", 0.0, "", ""), stop[0])
            print(f"[ersam] running {nb.name} (SCALE={scale}, SEED={seed}) ...", flush=True)
            try:
                result = execute_notebook(nb, run_dir, scale, seed, timeout_s, cell_timeout_s or timeout_s, stop,
                                          routed[nb.name])
                summary = _record(run_dir, nb.stem, result)
            except OSError as e:  # the runner's own files (a full disk): the chapter failed, say where and why
                result = ChapterResult("failed", 0.0, _rel(executed_path(run_dir, nb.name), run_dir),
                                       _rel(log_path(run_dir, nb.stem), run_dir),
                                       error={"cell": None, "source": "", "message": f"{type(e).__name__}: {e}"})
                with contextlib.suppress(OSError):  # recorded if there is room for it
                    _record(run_dir, nb.stem, result)
                raise NotebookFailed(nb.name, result) from None
            if result.status == "interrupted":
                raise RunInterrupted(nb.name, result, stop[0])
            if result.status != "ok":
                raise NotebookFailed(nb.name, result)
            print(f"[ersam] {nb.name} ok in {result.wall_s:.1f} s", flush=True)
    return summary


def execute_notebook(
    notebook: Path, run_dir: Path, scale: str, seed: int, timeout_s: float, cell_timeout_s: float,
    stop: list[int] | None = None, extra: dict[str, Any] | None = None,
) -> ChapterResult:
    """Run one notebook in a papermill subprocess (a hard wall-clock limit needs a process we can kill).

    The chapter is marked ``running`` in the summary and its metrics file is cleared first, so the record never
    shows an earlier execution's status or metrics next to this one's executed copy. A signal number appended to
    ``stop`` (by the runner's SIGINT/SIGTERM handler) ends it as ``interrupted``.
    """
    executed = executed_path(run_dir, notebook.name)
    log = log_path(run_dir, notebook.stem)
    for path in (executed, log):
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_link(path)
    metrics_path(run_dir, notebook.stem).unlink(missing_ok=True)
    started = _now()
    _record(run_dir, notebook.stem, ChapterResult("running", 0.0, _rel(executed, run_dir), _rel(log, run_dir),
                                                 started=started, runner=_runner_id()))
    params = {"SCALE": scale, "RUN_DIR": str(run_dir), "SEED": seed} | (extra or {})
    cmd = [
        sys.executable, "-m", "papermill", str(notebook), str(executed),
        "-y", json.dumps(params), "--cwd", str(notebook.parent),
        # whole seconds, rounded up: papermill takes an integer, and 0 would mean "no limit"
        "--log-output", "--no-progress-bar", "--execution-timeout", str(math.ceil(cell_timeout_s)),
    ]
    env = training_env() | dict(PAPERMILL_EXECUTION="1", ERSAM_PROGRESS=os.environ.get("ERSAM_PROGRESS", "0"),
                                MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1")
    stop = stop if stop is not None else []
    start = time.perf_counter()
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666), "w",
              encoding="utf-8") as log_f:
        proc = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_die_with(os.getpid()))
        status = _wait(proc, start + timeout_s, stop)
    wall = time.perf_counter() - start
    error = None
    if status == "failed" and "CellTimeoutError" in _tail(log, 40):  # papermill's per-cell limit, not a bug
        status = "timeout"
        timeout_s = math.ceil(cell_timeout_s)
    if status != "ok":
        error = locate_error(executed, log)
        if status == "timeout":
            error["message"] = f"timed out after {timeout_s:.0f} s (still running: cell {error.get('cell')})"
        if status == "interrupted":
            error["message"] = (f"interrupted by {signal.Signals(stop[0]).name} (was running: cell "
                                f"{error.get('cell')})")
    metrics = load_metrics(run_dir, notebook.stem)
    digest = sha256_file(executed) if status == "ok" else None
    return ChapterResult(status, round(wall, 2), _rel(executed, run_dir), _rel(log, run_dir), metrics, error, digest,
                         started)


def _drop_link(path: Path) -> None:
    """Remove a symbolic link where the runner writes a file of its own (it never makes links itself), so that
    nothing outside the run folder is overwritten through it; the link's target is left as it is."""
    if path.is_symlink():
        print(f"[ersam] {path} was a symbolic link; removed it (the runner writes its own file there, never "
              f"through a link)", file=sys.stderr, flush=True)
        path.unlink()


def _die_with(parent: int) -> Any:
    """A ``preexec_fn`` that makes the child get SIGTERM when the runner dies, even by SIGKILL or the OOM killer
    (Linux's parent-death signal), so papermill never outlives it; the kernel then exits by itself (ipykernel
    polls its parent). Elsewhere, or if the runner died before the child got this far, the child just exits."""
    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the runner is already gone
            os._exit(1)
    return arm if sys.platform.startswith("linux") else None


def _runner_id() -> dict[str, Any]:
    """Who runs a chapter: host, process id and its start time (a reused pid has another start time)."""
    return {"host": platform.node(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def runner_alive(runner: dict[str, Any] | None) -> bool:
    """Whether the runner recorded in a ``running`` chapter is still alive (an unknown one on another host is)."""
    if not runner or runner.get("host") != platform.node():
        return True  # cannot tell from here: believe the record
    try:
        return abs(psutil.Process(int(runner["pid"])).create_time() - float(runner["started"])) < 1e-3
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _wait(proc: subprocess.Popen, deadline: float, stop: list[int]) -> str:
    """Wait for papermill; on the deadline or a stop signal, kill it and its kernel. Returns the status."""
    while True:
        try:
            rc = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None:  # (a kernel orphaned by papermill's death exits by itself: ipykernel polls its parent)
            if rc == 0:
                return "ok"
            if rc < 0 and not stop:
                stop.append(-rc)  # papermill itself was killed (a kill of the tree, the OOM killer): a stop, no bug
            return "interrupted" if stop else "failed"
        if stop or time.perf_counter() > deadline:
            kill_tree(proc)
            return "interrupted" if stop else "timeout"


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``, every process below it (the kernel and its workers) and their process groups; reap it.

    The kernel runs in its own session (jupyter_client starts it with ``start_new_session``), so killing
    papermill's group alone would leave it running; the tree is taken before anything is killed.
    """
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    groups = set()
    for p in tree:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(p.pid))
        with contextlib.suppress(psutil.Error):
            p.kill()
    for group in groups - {os.getpgrp()}:  # anything the kernel forked after the snapshot shares its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=5)
    proc.wait()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Collect SIGINT/SIGTERM into a list instead of dying, so the runner can stop its children first."""
    stop: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record(run_dir: Path, stem: str, result: ChapterResult) -> dict[str, Any]:
    """Set one chapter's entry in ``summary.json`` under the summary lock; return the updated summary."""
    def update(summary: dict[str, Any]) -> dict[str, Any]:
        summary["chapters"][stem] = asdict(result)
        summary["updated"] = _now()
        return summary

    return update_json(summary_path(run_dir), update)


def locate_error(executed: Path, log: Path) -> dict[str, Any]:
    """Find the failing (or, after a timeout, the still-running) cell in papermill's partial executed copy."""
    try:
        nb = read_json(executed)
    except (FileNotFoundError, ArtifactError):  # not written yet, or cut short by a kill
        return {"cell": None, "source": "", "message": _tail(log)}
    code_cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    for number, cell in enumerate(code_cells, start=1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return {"cell": number, "source": _source(cell), "message": f"{out.get('ename')}: {out.get('evalue')}"}
    for number, cell in enumerate(code_cells, start=1):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return {"cell": number, "source": _source(cell), "message": _tail(log)}
    return {"cell": None, "source": "", "message": _tail(log)}


def _open_summary(run_dir: Path, scale: str, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """Create the run's summary, or check that the existing one is of the same scale and seed (under the lock);
    record the run's further chapter parameters."""
    path = summary_path(run_dir)

    def update(summary: dict[str, Any] | None) -> dict[str, Any]:
        if summary is None:
            summary = {"run_dir": str(run_dir), "scale": scale, "seed": seed, "created": _now(), "chapters": {}}
        elif summary_problem(summary):
            raise ArtifactError(f"{path} is not a run summary of this book: {summary_problem(summary)}")
        elif (summary.get("scale"), summary.get("seed")) != (scale, seed):
            raise ValueError(
                f"{run_dir} holds a run with SCALE={summary.get('scale')}, SEED={summary.get('seed')}; "
                f"use another --run-dir for SCALE={scale}, SEED={seed}"
            )
        summary["environment"] = environment_info()
        if params:
            summary["parameters"] = dict(params)
        mark_dead_runners(summary)
        return summary

    try:
        return update_json(path, update)
    except ArtifactError as e:
        again = shlex.join(["python", "-m", "ersam_lib", "run", "--run-dir", str(run_dir), "--scale", scale,
                            "--seed", str(seed)])
        raise ArtifactError(f"{e}; it is the record of the run: move it away and run every chapter again "
                            f"({again})") from None


def mark_dead_runners(summary: dict[str, Any]) -> list[str]:
    """Mark ``interrupted`` every chapter whose entry says ``running`` but whose runner is gone (killed by SIGKILL
    or the OOM killer, it could not record its end); return their names. Readers of the summary call it."""
    dead = []
    for name, entry in summary.get("chapters", {}).items():
        if isinstance(entry, dict) and entry.get("status") == "running" and not runner_alive(entry.get("runner")):
            entry["status"] = "interrupted"
            entry["error"] = {"cell": None, "source": "", "message": "the runner died without recording an end "
                              "(killed by SIGKILL or out of memory); run the chapter again"}
            dead.append(name)
    return dead


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-n:])
    except FileNotFoundError:
        return ""


def _rel(path: Path, base: Path) -> str:
    return str(path.relative_to(base))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
