"""The pipeline runner: executes the chapter notebooks in order with papermill (chapter 0, "How to run the book").

Each notebook ``notebooks/NN_name.ipynb`` runs in its own papermill process with ``SCALE``, ``RUN_DIR`` and ``SEED``
injected, a wall-clock limit per notebook (and per cell), its output streamed to ``RUN_DIR/logs/NN_name.log``, and
its executed copy written to ``RUN_DIR/executed/NN_name.ipynb`` (kept when it fails, for the post-mortem). After
each notebook the runner updates ``RUN_DIR/summary.json`` with the status, the wall time and the metrics the chapter
recorded with :func:`ersam_lib.rundir.record_metrics`. A failure stops the run and names the notebook, the cell
and the error. Further chapter parameters (papermill's ``-p NAME VALUE``, e.g. ``-p SOURCE librispeech``) go only to
the notebooks whose parameters cell declares them (:func:`chapter_parameters`).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import atomic_write_json, read_json
from .rundir import executed_path, load_metrics, log_path, summary_path
from .scales import check_scale

__all__ = [
    "ChapterResult", "chapter_parameters", "discover_notebooks", "environment_info", "execute_notebook",
    "locate_error", "NotebookFailed", "parse_parameter", "run_pipeline", "select_notebooks"
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOKS = REPO_ROOT / "notebooks"
RESERVED = {"SCALE": "--scale", "RUN_DIR": "--run-dir", "SEED": "--seed"}  # the runner injects these itself


@dataclass
class ChapterResult:
    """What the run summary keeps about one executed notebook."""

    status: str  # "ok" | "failed" | "timeout"
    wall_s: float
    executed: str
    log: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


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
    """Filter by chapter prefix: ``only="02"`` runs chapter 02 alone, ``from_="03"`` resumes at chapter 03."""
    if only and from_:
        raise ValueError("give --only or --from, not both")
    prefixes = [p.name[:2] for p in notebooks]
    key = only or from_
    if key is None:
        return notebooks
    key = key.zfill(2)
    if key not in prefixes:
        raise ValueError(f"no chapter {key}; chapters are {', '.join(prefixes)}")
    if only:
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
    return info


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
    Raises :class:`NotebookFailed` at the first failing notebook, after recording it in the summary.
    """
    scale = check_scale(scale)
    run_dir = Path(run_dir).resolve()
    notebooks = select_notebooks(discover_notebooks(notebooks_dir), only=only, from_=from_)
    routed = chapter_parameters(notebooks, params or {})
    summary = _open_summary(run_dir, scale, seed)
    if params:
        summary["parameters"] = dict(params)
    for nb in notebooks:
        print(f"[ersam] running {nb.name} (SCALE={scale}, SEED={seed}) ...", flush=True)
        result = execute_notebook(nb, run_dir, scale, seed, timeout_s, cell_timeout_s or timeout_s, routed[nb.name])
        summary["chapters"][nb.stem] = asdict(result)
        summary["updated"] = _now()
        atomic_write_json(summary_path(run_dir), summary)
        if result.status != "ok":
            raise NotebookFailed(nb.name, result)
        print(f"[ersam] {nb.name} ok in {result.wall_s:.1f} s", flush=True)
    return summary


def execute_notebook(
    notebook: Path, run_dir: Path, scale: str, seed: int, timeout_s: float, cell_timeout_s: float,
    extra: dict[str, Any] | None = None,
) -> ChapterResult:
    """Run one notebook in a papermill subprocess (a hard wall-clock limit needs a process we can kill)."""
    executed = executed_path(run_dir, notebook.name)
    log = log_path(run_dir, notebook.stem)
    executed.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    params = {"SCALE": scale, "RUN_DIR": str(run_dir), "SEED": seed} | (extra or {})
    cmd = [
        sys.executable, "-m", "papermill", str(notebook), str(executed),
        "-y", json.dumps(params), "--cwd", str(notebook.parent),
        "--log-output", "--no-progress-bar", "--execution-timeout", str(int(cell_timeout_s)),
    ]
    env = dict(os.environ, PAPERMILL_EXECUTION="1", ERSAM_PROGRESS=os.environ.get("ERSAM_PROGRESS", "0"),
               MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    status = "ok"
    with open(log, "w", encoding="utf-8") as log_f:
        proc = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernel is a grandchild: kill the whole group
            proc.wait()
            status = "timeout"
    wall = time.perf_counter() - start
    error = None
    if status != "ok":
        error = locate_error(executed, log)
        if status == "timeout":
            error["message"] = f"timed out after {timeout_s:.0f} s (still running: cell {error.get('cell')})"
    metrics = load_metrics(run_dir, notebook.name[:2])
    return ChapterResult(status, round(wall, 2), _rel(executed, run_dir), _rel(log, run_dir), metrics, error)


def locate_error(executed: Path, log: Path) -> dict[str, Any]:
    """Find the failing (or, after a timeout, the still-running) cell in papermill's partial executed copy."""
    try:
        nb = read_json(executed)
    except (FileNotFoundError, json.JSONDecodeError):
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


def _open_summary(run_dir: Path, scale: str, seed: int) -> dict[str, Any]:
    path = summary_path(run_dir)
    if path.exists():
        summary = read_json(path)
        if (summary.get("scale"), summary.get("seed")) != (scale, seed):
            raise ValueError(
                f"{run_dir} holds a run with SCALE={summary.get('scale')}, SEED={summary.get('seed')}; "
                f"use another --run-dir for SCALE={scale}, SEED={seed}"
            )
    else:
        summary = {"run_dir": str(run_dir), "scale": scale, "seed": seed, "created": _now(), "chapters": {}}
    summary["environment"] = environment_info()
    return summary


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
