"""What readers see (issue 15): the staged chapters hide papermill's injected parameters and say at which scale and
seed they ran, the render fails on a CDN load or a build-machine path, equations are served from the book itself,
and the landing page's headline results come from the run (and say so when chapters 5 or 6 are missing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from ersam_lib.app.book import (BOOK_DIR, build_book, check_offline, differences_markdown, find_leaks,
                                headline_markdown, prepare_for_readers, write_headline)
from ersam_lib.app.runner import run_pipeline
from ersam_lib.core.cards import Headline
from ersam_lib.core.io import ArtifactError, atomic_write_json, read_json

from .test_runner import _write_notebook

SUMMARY = {"scale": "tutorial", "seed": 3, "updated": "2026-12-01T10:00:00+00:00", "chapters": {}}


def _executed(run_dir: str) -> dict:
    return {
        "metadata": {"papermill": {"input_path": "/home/me/repo/notebooks/04_supernet.ipynb",
                                   "output_path": f"{run_dir}/executed/04_supernet.ipynb",
                                   "parameters": {"SCALE": "tutorial", "RUN_DIR": run_dir, "SEED": 3, "TAUS": [0.5]}}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# Chapter 4"},
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'SCALE = "tutorial"', "outputs": []},
            {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
             "source": f'# Parameters\nRUN_DIR = "{run_dir}"\n'},
            {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []},
        ],
    }


def test_the_staged_copy_hides_the_injected_parameters_and_says_how_the_page_was_executed() -> None:
    run_dir = "/data/runs/tutorial"
    executed = _executed(run_dir)
    nb = prepare_for_readers(executed, SUMMARY, "tutorial")
    sources = [c["source"] for c in nb["cells"]]
    assert not any(run_dir in s for s in sources) and run_dir not in str(nb["metadata"])
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code", "markdown", "code"]
    note = sources[2]  # right under the parameters cell, where the injected cell was
    assert 'SCALE="tutorial"' in note and "SEED=3" in note and "`TAUS=[0.5]`" in note and "run `tutorial`" in note
    assert nb["metadata"]["papermill"]["parameters"]["RUN_DIR"] == "tutorial"
    assert nb["metadata"]["papermill"]["input_path"] == "04_supernet.ipynb"
    assert executed["cells"][2]["metadata"]["tags"] == ["injected-parameters"]  # the run's copy is left alone


def test_check_offline_flags_loads_from_the_network_not_links(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.html").write_text('<script src="_static/mathjax/tex-mml-chtml.js"></script>'
                                      '<a href="https://arxiv.org/abs/2303.10727">paper</a><link rel="next" '
                                      'href="https://example.org/next.html"><img src="_images/a.png">')
    (tmp_path / "sub" / "bad.html").write_text(
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/a.css"><img src="HTTP://example.org/x.png">')
    problems = check_offline(tmp_path)
    assert len(problems) == 3 and all(p.startswith("sub/bad.html loads ") for p in problems)
    assert any("cdn.jsdelivr.net" in p for p in problems)


def test_find_leaks_names_the_file_and_ignores_longer_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (tmp_path / "a.html").write_text(f"BuildReport(data_dir='{run}/data')")
    (tmp_path / "b.html").write_text(f"{run}2/data and x{run} and {run}.bak")  # other names that start alike
    (tmp_path / "c.ipynb").write_text(f'"RUN_DIR": "{run}"')
    assert find_leaks(tmp_path, [run]) == [f"a.html shows the build machine's path {run}",
                                           f"c.ipynb shows the build machine's path {run}"]
    assert find_leaks(tmp_path, [tmp_path / "elsewhere"]) == []


def _frontier(run_dir: Path) -> None:
    (run_dir / "search").mkdir(parents=True)
    pd.DataFrame([
        {"name": "searched-a", "kind": "searched", "acc": 0.6, "error": 0.4, "mae": 0.5, "energy_mj": 1.1,
         "latency_ms": 0.9, "measured_eager_min_ms": 1.2, "params": 5000, "real_acc": 0.55, "real_mae": 0.6,
         "memory_kb": 5.0},
        {"name": "searched-b", "kind": "searched", "acc": 0.7, "error": 0.3, "mae": 0.4, "energy_mj": 2.2,
         "latency_ms": 1.9, "measured_eager_min_ms": 2.5, "params": 9000, "real_acc": 0.6, "real_mae": 0.5,
         "memory_kb": 9.0},
        {"name": "tcresnet8", "kind": "baseline", "acc": 0.5, "error": 0.5, "mae": 0.7, "energy_mj": 2.0,
         "latency_ms": 1.0, "measured_eager_min_ms": 1.4, "params": 64372, "real_acc": 0.4, "real_mae": 0.9,
         "memory_kb": 63.0},
    ]).to_csv(run_dir / "search" / "frontier.csv", index=False)
    atomic_write_json(run_dir / "search" / "chosen.json",
                      {"budget": "searched-a", "most_accurate": "searched-b", "baselines": ["tcresnet8"]})


def test_the_headline_says_which_chapters_are_missing(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "summary.json", SUMMARY | {"chapters": {
        "00_setup": {"status": "ok", "wall_s": 60.0}, "01_data": {"status": "ok", "wall_s": 120.0}}})
    text = headline_markdown(tmp_path, {"intro"}, None)
    assert "This run has no chapter 5" in text and "This run has no chapter 6" in text
    assert 'SCALE="tutorial"' in text and "2 chapters executed (00, 01) in 3.0 min" in text
    assert "{doc}" not in text  # no link to a page this book does not have


def test_the_headline_sets_the_chosen_models_against_the_baselines(tmp_path: Path) -> None:
    _frontier(tmp_path)
    chapters = {"05_search": {"status": "ok", "wall_s": 1.0}, "06_deploy": {"status": "ok", "wall_s": 1.0}}
    atomic_write_json(tmp_path / "summary.json", SUMMARY | {"chapters": chapters})
    Headline("searched-a", "budget", 0.62, 0.61, 0.5, None, 1.234, 920.5, 9.1, 1666.0, 0.33, 1.17).save(tmp_path)
    source = tmp_path / "source"
    source.mkdir()
    (source / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/05_search\n"
                                     "  - file: differences\n")
    text = write_headline(tmp_path, source).read_text()
    assert (source / "_generated" / "frontier.png").stat().st_size > 0
    assert "```{figure} _generated/frontier.png" in text and ":alt:" in text
    rows = [line for line in text.split("Test-split scores")[0].splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`searched-a`", "`searched-b`", "`tcresnet8`"]
    assert "chosen within the default energy budget" in rows[0] and "most accurate searched" in rows[1]
    assert "| 40.0% | 0.500 | 1.20 | 1.10 | 5,000 |" in rows[0]  # error, MAE, measured latency, energy, params
    assert "{doc}`/chapters/05_search`" in text and "{doc}`/differences`" in text and "paper_scale" not in text
    assert "| deployed model | `searched-a` (chapter 5's choice within the default energy budget) |" in text
    assert "| test accuracy, float / int8 | 62.0% / 61.0% |" in text and "| `real_test` accuracy, float / int8 | not in " \
        "this run |" in text and "| 1.23 ms |" in text and "33.0% exact counts, MAE 1.17 speakers" in text
    assert "no chapter 6" not in text


def test_the_differences_page_fills_this_runs_column_from_the_run(tmp_path: Path) -> None:
    _frontier(tmp_path)
    m04 = {"final_variant": "selective-entropy-tau0.8", "final_query_rate": 0.25,
           "final_minus_full_acc_largest": -0.004, "final_minus_full_acc_smallest": 0.012}
    m05 = {"peer_real_test_acc": {"CountNet F-CRNN (published)": 0.5},
           "peer_real_test_mae": {"CountNet F-CRNN (published)": 0.75}}
    atomic_write_json(tmp_path / "summary.json", SUMMARY | {"chapters": {
        "04_supernet": {"status": "ok", "metrics": m04}, "05_search": {"status": "ok", "metrics": m05}}})
    text = differences_markdown(tmp_path)
    row = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in text.splitlines() if line.startswith("| ")}
    assert row["ERSAM: error on LibriSpeech-SAM {cite}`ersam2023`"] == (
        "40.0% (synthetic test) / 45.0% (`real_test`), `searched-a`")  # the chosen model within the budget
    assert row["ERSAM: latency per 5-s segment"].startswith("0.900 ms through ExecuTorch")
    assert row["Speckhard et al.: searched net {cite}`speckhard2022`"].startswith("1.10 mJ (calibrated), 5.0 kB")
    assert row["Speckhard et al.: MobileNetV2"] == "not in this run"
    assert "published F-CRNN on `real_test`: MAE 0.75, accuracy 50.0%" in text
    assert "25% of the samples sent to the teacher; largest subnet -0.4 points and smallest +1.2 points" in text
    assert 'This run: `SCALE="tutorial"`, `SEED=3`' in text and "TO FILL" not in text


def test_the_book_loads_mathjax_from_its_own_static_files() -> None:
    config = (BOOK_DIR / "_config.yml").read_text()
    assert "mathjax_path: mathjax/tex-mml-chtml.js" in config
    vendored = BOOK_DIR / "_vendor" / "mathjax"
    assert (vendored / "tex-mml-chtml.js").stat().st_size > 500_000 and (vendored / "LICENSE").exists()
    assert len(list((vendored / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))) > 10
    assert not (BOOK_DIR / "_static").exists(), "jupyter-book would put every .js under book/_static on every page"


@pytest.mark.slow
def test_a_render_that_would_show_a_build_machine_path_fails(tmp_path: Path) -> None:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_first.ipynb", "print('results in', RUN_DIR)")
    nb = nbformat.read(nbs / "01_first.ipynb", as_version=4)
    nb.cells[0].source += "\n\nWithin $\\pm 10\\,\\%$ of the measurement."
    nbformat.write(nb, nbs / "01_first.ipynb")
    run = tmp_path / "run"
    run_pipeline(run, "smoke", 0, nbs, timeout_s=300)
    book = tmp_path / "book_src"
    shutil.copytree(BOOK_DIR, book, ignore=shutil.ignore_patterns("_build", "chapters"))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/01_first\n"
                                   "  - file: references\n")
    with pytest.raises(ArtifactError, match=r"chapters/01_first\.html shows the build machine's path " + str(run)):
        build_book(run, book, tmp_path / "out")
    assert not (tmp_path / "out" / "_build").exists()  # never in the readers' place, kept aside for inspection
    html = tmp_path / "out" / "_build.rejected" / "html"
    assert check_offline(html) == []  # MathJax and everything else from the book's own files
    assert '"../_static/mathjax/tex-mml-chtml.js' in (html / "chapters" / "01_first.html").read_text()
    assert "This run has no chapter 5" in (html / "intro.html").read_text()
    assert read_json(run / "executed" / "01_first.ipynb")["cells"][2]["metadata"]["tags"] == ["injected-parameters"]
