"""Notebook hygiene (as d2l and QuantEcon enforce it): no stored outputs, one parameters cell, a title, exercises;
and the book's table of contents lists every chapter and only files that exist."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from ersam_lib.app.book import BOOK_DIR, toc_chapters, toc_files
from ersam_lib.app.runner import discover_notebooks

from .conftest import NOTEBOOKS

CHAPTERS = discover_notebooks(NOTEBOOKS)


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_cells_have_unique_ids(path: Path) -> None:
    raw = json.loads(path.read_text())  # read raw: nbformat.read would fill in missing ids with a warning
    ids = [c.get("id") for c in raw["cells"]]
    assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: cells without ids or with repeated ids"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_has_one_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    assigned = {t.id for node in ast.parse(_source(tagged[0])).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert {"SCALE", "RUN_DIR", "SEED"} <= assigned, f"{path.name}: parameters cell assigns only {sorted(assigned)}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_structure(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    markdown = [_source(c) for c in nb.cells if c.cell_type == "markdown"]
    titles = [line for text in markdown for line in text.splitlines() if line.startswith("# ")]
    assert len(titles) == 1 and markdown[0].startswith("# "), f"{path.name}: want one level-1 title, first"
    text = "\n".join(markdown)
    assert "## Summary" in text and "## Exercises" in text, f"{path.name}: must end with a summary and exercises"
    assert ":class: dropdown" in text, f"{path.name}: exercise solutions belong in collapsed dropdowns"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    # the opening's two paragraphs, each whole: what to run first (ends with a full stop), then how long it takes
    paragraphs = markdown[0].split("\n\n")
    run_first = [p for p in paragraphs if p.startswith("**Run first:**")]
    time = [i for i, p in enumerate(paragraphs) if p.startswith("**Time:**")]
    assert len(run_first) == 1 and run_first[0].rstrip().endswith("."), f"{path.name}: a broken 'Run first' paragraph"
    assert time == [len(paragraphs) - 1] and "\n" not in paragraphs[-1].strip(), (
        f"{path.name}: the 'Time' paragraph closes the opening, on one line")


def test_toc_lists_every_chapter_and_only_existing_files() -> None:
    chapters = toc_chapters()
    assert chapters == [p.stem for p in CHAPTERS], "book/_toc.yml and notebooks/ disagree"
    for entry in toc_files():
        if entry.startswith("chapters/"):
            assert (NOTEBOOKS / f"{Path(entry).name}.ipynb").exists()
        else:
            assert any((BOOK_DIR / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"{entry} missing"
