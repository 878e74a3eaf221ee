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


# The library code each chapter shows on its page, at the point its text explains it (issue 35): chapter -> objects.
SHOWN = {
    "01_data": ("data_prep.labels.max_concurrent", "data_prep.vad.vad_frames", "data_prep.render.render_mixture"),
    "02_profiling": ("ersam_lib.measure.costmodel.CostModel.predict_latency",),
    "03_teacher": ("ersam_lib.training.fit.train_classifier",),
    "04_supernet": ("ersam_lib.training.distill.uncertainty", "ersam_lib.training.train.sandwich_step",
                    "ersam_lib.models.supernet.calibrated_subnet", "ersam_lib.models.supernet.recalibrate_bn"),
    "05_search": ("ersam_lib.experiments.search.reward.Reward.__call__",
                  "ersam_lib.experiments.search.strategies.evolution.run", "ersam_lib.measure.pareto.hypervolume_2d"),
    "06_deploy": ("ersam_lib.measure.frontend.LogMelFrontEnd.forward", "ersam_lib.experiments.deploy.quantize_pt2e"),
}


def _resolve(dotted: str) -> object:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_chapter_shows_the_code_of_its_algorithms(smoke_book: Path) -> None:
    import html as html_lib
    import re

    from ersam_lib.app.pages import source_of

    assert set(SHOWN) == {p.stem for p in discover_notebooks(NOTEBOOKS)} - {"00_setup"}
    for stem, names in SHOWN.items():
        page = (smoke_book / "chapters" / f"{stem}.html").read_text(encoding="utf-8")
        text = html_lib.unescape(re.sub(r"<[^>]+>", "", page))  # what a reader sees, highlighting removed
        for name in names:
            src = source_of(_resolve(name))
            assert src.splitlines()[0] == f"# {name}" and src.splitlines()[0] in text, (stem, name)
            for line in src.splitlines()[1:]:  # the whole source, line by line, as the module holds it now
                assert line.strip() in text, (stem, name, line)
