"""Student copies of the chapters (the instructor's view; fastbook's ``clean/`` pattern).

``python -m ersam_lib students`` writes ``notebooks/student/NN_name.ipynb`` for every chapter: the same notebook
without the exercise solutions (the collapsed ``:class: dropdown`` blocks whose title names a solution), without
outputs, with a note under the title that says what it is, and with the relative paths of its code cells one folder
deeper (``"../runs/tutorial"`` becomes ``"../../runs/tutorial"``: the copy lives in ``notebooks/student/``).
The copies are committed; ``tests/test_students.py`` fails when one is out of sync with its chapter, and
``python -m ersam_lib students --check`` says the same from the command line.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import nbformat

from ..core.io import atomic_write_text
from .runner import DEFAULT_NOTEBOOKS, discover_notebooks

__all__ = ["STUDENT_DIR", "out_of_sync", "remove_solutions", "student_copy", "write_student_copies"]

STUDENT_DIR = DEFAULT_NOTEBOOKS / "student"
NOTE = ("*Student copy: the exercise solutions are removed. It is generated from `notebooks/{name}` by "
        "`python -m ersam_lib students`; edit the chapter, not this copy.*")
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{(?P<directive>[\w:-]+)\}\s*(?P<title>.*)$")
_RELATIVE = re.compile(r"""(?P<quote>["'])\.\./""")


def remove_solutions(markdown: str) -> str:
    """``markdown`` without its solution blocks: fenced directives (backticks or colons) with a ``:class:``
    option that contains ``dropdown`` and a title (or directive) that names a solution; hints stay."""
    lines = markdown.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].rstrip("\n"))
        end = _closing(lines, i, match.group("fence")) if match else None
        if match and end is not None and _is_solution(match, lines[i + 1:end]):
            i = end + 1
            while out and not out[-1].strip() and i < len(lines) and not lines[i].strip():
                i += 1  # do not leave two blank lines where the block was
            continue
        out.append(lines[i])
        i += 1
    text = "".join(out).rstrip()
    return text + "\n" if text and markdown.endswith("\n") else text


def _closing(lines: list[str], start: int, fence: str) -> int | None:
    """Index of the line that closes the directive opened at ``start`` (the same fence alone on a line)."""
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == fence:
            return j
    return None


def _is_solution(match: re.Match, body: list[str]) -> bool:
    options = [line.strip() for line in body if line.strip().startswith(":")]
    dropdown = any(o.startswith(":class:") and "dropdown" in o for o in options) or match["directive"] == "dropdown"
    named = "solution" in (match["title"] + " " + match["directive"]).lower()
    return dropdown and named


def student_copy(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of one chapter notebook (``name``: its file name, for the note)."""
    nb = copy.deepcopy(notebook)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = remove_solutions(cell.source)
            if not cell.source.strip():
                continue  # a cell that held only solutions
        elif cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            cell.source = _RELATIVE.sub(r"\g<quote>../../", cell.source)
        cells.append(cell)
    note = nbformat.v4.new_markdown_cell(NOTE.format(name=name))
    note.id = "student-copy-note"
    nb.cells = cells[:1] + [note] + cells[1:]
    nb.metadata.pop("papermill", None)
    return nb


def _render(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(student_copy(nb, path.name)) + "\n"


def write_student_copies(out_dir: str | os.PathLike = STUDENT_DIR,
                         notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS) -> list[Path]:
    """Write the student copy of every chapter into ``out_dir`` and remove copies of chapters that no longer exist."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chapters = discover_notebooks(notebooks_dir)
    written = [atomic_write_text(out / p.name, _render(p)) for p in chapters]
    for stale in set(out.glob("*.ipynb")) - set(written):
        stale.unlink()
    return written


def out_of_sync(out_dir: str | os.PathLike = STUDENT_DIR,
                notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS) -> list[str]:
    """File names in ``out_dir`` that differ from what :func:`write_student_copies` would write (missing,
    stale or extra); empty when the copies are in sync."""
    out = Path(out_dir)
    chapters = discover_notebooks(notebooks_dir)
    wrong = [p.name for p in chapters
             if not (out / p.name).exists() or (out / p.name).read_text(encoding="utf-8") != _render(p)]
    extra = {p.name for p in out.glob("*.ipynb")} - {p.name for p in chapters}
    return sorted(wrong + list(extra))
