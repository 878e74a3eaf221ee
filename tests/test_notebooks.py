"""Every chapter notebook runs at SCALE=smoke through the runner, records metrics, and the book renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from ersam_lib.app.runner import discover_notebooks

from .conftest import NOTEBOOKS

pytestmark = pytest.mark.notebooks


def test_every_chapter_ran_and_recorded_metrics(smoke_run: dict) -> None:
    expected = [p.stem for p in discover_notebooks(NOTEBOOKS)]
    assert list(smoke_run["chapters"]) == expected
    for name, entry in smoke_run["chapters"].items():
        assert entry["status"] == "ok", f"{name}: {entry['error']}"
        assert entry["metrics"], f"{name} recorded no metrics"


def test_book_renders_every_chapter(smoke_book: Path) -> None:
    html = smoke_book  # rendered into a temporary folder, never the reader's book/_build (the fixture checks)
    for nb in discover_notebooks(NOTEBOOKS):
        page = html / "chapters" / f"{nb.stem}.html"
        assert page.exists(), f"{page} not rendered"
        text = page.read_text(encoding="utf-8")
        assert "<img" in text, f"{nb.stem} rendered without its figures"
        assert "SCALE=smoke, SEED=0" in text  # every page says which run it shows
