"""Rendering the book (chapter 0): Jupyter Book 1 over the executed notebooks of a run, never re-executing them.

``build_book(run_dir)`` copies ``RUN_DIR/executed/*.ipynb`` into ``book/chapters/`` (git-ignored), checks that
every chapter of ``book/_toc.yml`` is there and ran successfully, then runs ``jupyter-book build`` with warnings as
errors, so a missing file or a broken cross-reference fails the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .io import read_json
from .rundir import summary_path
from .runner import REPO_ROOT

__all__ = ["build_book", "stage_executed", "toc_chapters", "toc_files"]

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


def stage_executed(run_dir: str | os.PathLike, book_dir: Path = BOOK_DIR) -> list[Path]:
    """Copy the run's executed notebooks into ``book/chapters``; fail clearly if one is missing or failed."""
    run_dir = Path(run_dir)
    summary = read_json(summary_path(run_dir))
    target = book_dir / "chapters"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copied = []
    for stem in toc_chapters(book_dir):
        entry = summary["chapters"].get(stem)
        if entry is None:
            raise FileNotFoundError(f"chapter {stem} was not executed in {run_dir}; run the pipeline first")
        if entry["status"] != "ok":
            raise RuntimeError(f"chapter {stem} {entry['status']} in {run_dir}: {entry.get('error')}")
        copied.append(Path(shutil.copy2(run_dir / entry["executed"], target / f"{stem}.ipynb")))
    return copied


def build_book(run_dir: str | os.PathLike, book_dir: Path = BOOK_DIR) -> Path:
    """Stage the executed notebooks and build the HTML book; return the path of ``index.html``."""
    stage_executed(run_dir, book_dir)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(book_dir), "--builder", "html", "--warningiserror", "--keep-going"]
    subprocess.run(cmd, check=True)
    index = book_dir / "_build" / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"the build did not produce {index}")
    return index
