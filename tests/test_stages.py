"""The registry of stages (issue 31): one declaration per chapter, read by every module that needs a chapter's
label, notebook, files or metrics; no library module names a chapter number."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ersam_lib.app.compare import compare_run, record_reference
from ersam_lib.app.runner import discover_notebooks
from ersam_lib.core.io import atomic_write_json, read_json
from ersam_lib.core.stages import STAGES, KINDS

from .conftest import NOTEBOOKS, ROOT
from .test_runner import _write_notebook

LIBRARY = [p for folder in ("ersam_lib", "data_prep") for p in sorted((ROOT / folder).rglob("*.py"))]


def test_the_registry_lists_every_chapter_notebook_once_in_order() -> None:
    assert [s.notebook for s in STAGES] == [p.stem for p in discover_notebooks(NOTEBOOKS)]
    assert [s.chapter for s in STAGES] == sorted(s.chapter for s in STAGES)
    for field in ("label", "chapter", "notebook"):
        values = [getattr(s, field) for s in STAGES]
        assert len(set(values)) == len(values), field
    keys = [k for s in STAGES for k in s.files]
    assert len(set(keys)) == len(keys)
    assert {m.kind for s in STAGES for _, m in s.metrics} <= set(KINDS)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.label)
def test_each_chapter_records_its_metrics_under_its_own_label(stage) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{stage.notebook}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert re.findall(r"record_metrics\(RUN_DIR, \"(\w+)\"", code) == [stage.label]


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Non-docstring string constants of a module (docstrings say which chapter uses a function: that is prose)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and ast.get_docstring(node, clean=False) is not None}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_library_module_names_a_chapter_outside_the_registry() -> None:
    chapters = {s.chapter for s in STAGES} | {s.notebook for s in STAGES}
    found = [f"{p.relative_to(ROOT)}:{line}: {value!r}" for p in LIBRARY if p.name != "stages.py"
             for line, value in _string_constants(p) if value in chapters]
    assert found == [], "name the stage by its label (ersam_lib.core.stages), not by its chapter number"


def test_adding_a_chapter_is_one_notebook_and_one_stage(tmp_path: Path) -> None:
    """A demo chapter, declared in tests/demo_stage.py and nowhere in the library: the runner executes it, it writes
    its file where its stage says, records the metrics it declares (and is refused one it does not), and compare
    checks them as declared."""
    from .demo_stage import DEMO

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "07_demo.ipynb", (
        "from ersam_lib.core.rundir import record_metrics\nfrom demo_stage import DEMO\n"
        "path = DEMO.path(RUN_DIR, 'demo_table')\npath.parent.mkdir(parents=True, exist_ok=True)\n"
        "path.write_text('a,b\\n1,2\\n')\n"
        "record_metrics(RUN_DIR, DEMO, {'rows': 1, 'mean_acc': 0.5, 'demo_s': 0.1})\n"
        "try:\n    record_metrics(RUN_DIR, DEMO, {'rows_total': 1})\nexcept ValueError as e:\n"
        "    record_metrics(RUN_DIR, DEMO, {'rows': 1 + ('does not declare' in str(e))})"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}", "ERSAM_PROGRESS": "0"}
    run = tmp_path / "run"
    cli = subprocess.run([sys.executable, "-m", "ersam_lib", "run", "--scale", "smoke", "--run-dir", str(run),
                          "--notebooks", str(nbs), "--reference", str(tmp_path / "none.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert (run / "demo" / "table.csv").exists()
    assert read_json(run / "summary.json")["chapters"]["07_demo"]["metrics"] == {
        "rows": 2, "mean_acc": 0.5, "demo_s": 0.1}  # 2: the undeclared metric was refused
    stages = (*STAGES, DEMO)
    ref = read_json(record_reference(run, tmp_path / "ref.json", stages=stages))
    assert ref["chapters"]["07_demo"]["mean_acc"] == {"value": 0.5}
    assert compare_run(run, tmp_path / "ref.json", stages=stages).ok
    ref["chapters"]["07_demo"]["mean_acc"]["value"] = 0.45  # 5 points away: outside the accuracy kind's 3
    ref["chapters"]["07_demo"]["demo_s"]["value"] = 9.9  # a timing: printed only
    atomic_write_json(tmp_path / "ref.json", ref)
    result = compare_run(run, tmp_path / "ref.json", stages=stages)
    assert [r.metric for r in result.failures] == ["mean_acc"]
    assert {r.metric for r in compare_run(run, tmp_path / "ref.json").failures} >= {"rows", "mean_acc"}  # undeclared
