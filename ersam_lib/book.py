"""Rendering the book (chapter 0): Jupyter Book 1 over the executed notebooks of a run, never re-executing them.

``build_book(run_dir, out_dir)`` copies the book's sources (``book/``) into ``OUT/_build/source``, adds the run's
executed notebooks under ``chapters/`` after checking each one (status ``ok`` in ``summary.json``, the executed copy
unchanged since, every cell completed, executed with the run's scale and seed), states the run (scale, seed, folder
name) in every page's footer, and runs ``jupyter-book build --all`` with warnings as errors into ``OUT/_build/html``.
The checkout is only read: by default ``OUT`` is ``book/`` (the reader's copy, what ``make render`` makes); tests
pass a temporary folder. ``--all`` (a fresh Sphinx environment) makes every page show the run it was given, even
when another run was rendered into the same folder before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .io import ArtifactError, read_json, sha256_file
from .rundir import summary_path
from .runner import REPO_ROOT

__all__ = ["build_book", "check_executed", "stage_executed", "toc_chapters", "toc_files"]

BOOK_DIR = REPO_ROOT / "book"


def toc_files(book_dir: Path = BOOK_DIR) -> list[str]:
    """Every file the table of contents lists (root first), without suffix, relative to ``book_dir``."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))
            walk(entry.get("chapters", []))
            walk(entry.get("sections", []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return files


def toc_chapters(book_dir: Path = BOOK_DIR) -> list[str]:
    """The notebook stems the table of contents lists (entries under ``chapters/``)."""
    return [Path(f).name for f in toc_files(book_dir) if f.startswith("chapters/")]


def check_executed(path: Path, entry: dict[str, Any], summary: dict[str, Any]) -> None:
    """Refuse an executed copy that is not the complete, successful execution ``summary.json`` records."""
    if entry.get("status") != "ok":
        raise RuntimeError(f"chapter {path.stem} is {entry.get('status')!r} in {summary_path(path.parent.parent)}, "
                           f"not 'ok': {entry.get('error')}; run it again before rendering")
    if entry.get("executed_sha256") and sha256_file(path) != entry["executed_sha256"]:
        raise ArtifactError(f"{path} changed after the run recorded it (another execution may have started); "
                            f"run chapter {path.stem[:2]} again before rendering")
    nb = read_json(path)
    papermill = nb.get("metadata", {}).get("papermill", {})
    params = papermill.get("parameters", {})
    if (params.get("SCALE"), params.get("SEED")) != (summary["scale"], summary["seed"]):
        raise ArtifactError(f"{path} was executed with SCALE={params.get('SCALE')}, SEED={params.get('SEED')}, "
                            f"not the run's SCALE={summary['scale']}, SEED={summary['seed']}")
    unfinished = [i for i, c in enumerate((c for c in nb["cells"] if c["cell_type"] == "code"), start=1)
                  if c.get("metadata", {}).get("papermill", {}).get("status") != "completed"]
    if unfinished or papermill.get("exception") or not papermill.get("end_time"):
        raise ArtifactError(f"{path} is an incomplete execution (code cells {unfinished[:5]} did not complete); "
                            f"run chapter {path.stem[:2]} again before rendering")


def stage_executed(run_dir: str | os.PathLike, source_dir: Path, book_dir: Path = BOOK_DIR) -> list[Path]:
    """Copy the run's checked executed notebooks into ``source_dir/chapters``; fail clearly if one is missing."""
    run_dir = Path(run_dir)
    summary = read_json(summary_path(run_dir))
    target = source_dir / "chapters"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for stem in toc_chapters(book_dir):
        entry = summary["chapters"].get(stem)
        if entry is None:
            raise FileNotFoundError(f"chapter {stem} was not executed in {run_dir}; run the pipeline first")
        executed = run_dir / entry["executed"]
        if not executed.exists():
            raise FileNotFoundError(f"{executed} is missing; run chapter {stem[:2]} again before rendering")
        check_executed(executed, entry, summary)
        copied.append(Path(shutil.copyfile(executed, target / f"{stem}.ipynb")))
    return copied


def build_book(run_dir: str | os.PathLike, book_dir: Path = BOOK_DIR, out_dir: str | os.PathLike | None = None) -> Path:
    """Stage the book's sources and the run's executed notebooks, build the HTML book; return ``index.html``.

    Everything is written under ``out_dir/_build`` (default: ``book_dir``); ``book_dir`` itself is only read.
    """
    run_dir, book_dir = Path(run_dir), Path(book_dir)
    out = Path(out_dir) if out_dir is not None else book_dir
    if not summary_path(run_dir).exists():
        raise FileNotFoundError(f"{summary_path(run_dir)} does not exist: run the pipeline into {run_dir} first")
    source = out / "_build" / "source"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(book_dir, source, ignore=shutil.ignore_patterns("_build", "chapters", ".*"))
    stage_executed(run_dir, source, book_dir)
    _state_the_run(source / "_config.yml", run_dir)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(source), "--path-output", str(out), "--builder", "html", "--all",
           "--warningiserror", "--keep-going"]
    subprocess.run(cmd, check=True)
    index = out / "_build" / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"the build did not produce {index}")
    return index


def _state_the_run(config: Path, run_dir: Path) -> None:
    """Put the run's scale, seed, folder name and date into every page's footer (the folder's name, not its path)."""
    summary = read_json(summary_path(run_dir))
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc.setdefault("html", {})["extra_footer"] = (
        f"<p>Rendered from the run <code>{run_dir.resolve().name}</code>: SCALE={summary['scale']}, "
        f"SEED={summary['seed']}, last updated {summary.get('updated', summary.get('created', '?'))}.</p>")
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
