"""The instructor's view: student copies without solutions, in sync with the chapters (fastbook's ``clean/``), and
every chapter saying in one line which chapters must have run first with the same RUN_DIR, and in another
how long it runs at each scale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from ersam_lib.app.cli import main
from ersam_lib.app.runner import discover_notebooks
from ersam_lib.app.students import STUDENT_DIR, out_of_sync, remove_solutions, write_student_copies

from .conftest import NOTEBOOKS

CHAPTERS = discover_notebooks(NOTEBOOKS)
MARKDOWN = """## Exercises

1. First question?

```{admonition} Solution 1
:class: dropdown
The answer.
```

2. Second question?

:::{admonition} Hint
:class: dropdown
Look at chapter 2.
:::

::::{admonition} Solutions
:class: dropdown tip
- nested text
:::{note}
inside
:::
::::

```{note}
A note stays.
```"""


def test_remove_solutions_drops_solution_dropdowns_and_keeps_hints_and_notes() -> None:
    text = remove_solutions(MARKDOWN)
    assert "The answer" not in text and "nested text" not in text and "Solution" not in text
    assert "First question?" in text and "Second question?" in text
    assert "Look at chapter 2." in text and "A note stays." in text  # a hint and a plain note are not solutions
    assert "\n\n\n" not in text
    assert remove_solutions("```{admonition} Solution\n:class: dropdown\nonly this\n```") == ""


def test_student_copies_are_in_sync_with_the_chapters() -> None:
    wrong = out_of_sync()
    assert not wrong, (f"notebooks/student/ is out of sync for {wrong}: run `python -m ersam_lib students` and commit "
                       f"notebooks/student/")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_student_copy_has_the_exercises_without_solutions_outputs_or_wrong_paths(path: Path) -> None:
    chapter, copy = nbformat.read(path, as_version=4), nbformat.read(STUDENT_DIR / path.name, as_version=4)
    text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
    assert "## Exercises" in text and not re.search(r"\{admonition\}\s*Solution", text)
    assert ":class: dropdown" in "\n".join(c.source for c in chapter.cells)  # the chapter had solutions to remove
    assert all(not c.outputs and c.execution_count is None for c in copy.cells if c.cell_type == "code")
    code = [c.source for c in copy.cells if c.cell_type == "code"]
    assert code == [re.sub(r"([\"'])\.\./", r"\1../../", c.source) for c in chapter.cells if c.cell_type == "code"]
    params = next(c.source for c in copy.cells if "parameters" in c.metadata.get("tags", []))
    assert 'RUN_DIR = "../../runs/tutorial"' in params  # the copy runs from notebooks/student/


def test_the_students_command_writes_checks_and_removes_stale_copies(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "student"
    assert main(["students", str(out), "--check"]) == 1
    assert "out of sync" in capsys.readouterr().err
    out.mkdir()
    (out / "99_gone.ipynb").write_text("{}")  # a chapter that no longer exists
    assert main(["students", str(out)]) == 0 and main(["students", str(out), "--check"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in CHAPTERS]
    nb = json.loads((out / CHAPTERS[0].name).read_text())
    nb["cells"][0]["source"] += " edited by hand"
    (out / CHAPTERS[0].name).write_text(json.dumps(nb))
    assert out_of_sync(out) == [CHAPTERS[0].name]
    assert write_student_copies(out) and out_of_sync(out) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_says_which_chapters_to_run_first(path: Path) -> None:
    first = nbformat.read(path, as_version=4).cells[0].source
    lines = [line for line in first.splitlines() if line.startswith("**Run first:**")]
    assert len(lines) == 1, (f"{path.name}: its first markdown cell must say in one line which chapters must have run "
                             f"first with the same RUN_DIR: '**Run first:** chapters 1 and 2 with the same `RUN_DIR` "
                             f"(...)', or '**Run first:** nothing; ...'")
    named = {int(n) for n in re.findall(r"\d+", lines[0].split("(")[0])}
    if "nothing" not in lines[0]:
        assert named and max(named) < int(path.name[:2]), f"{path.name}: a chapter can only need earlier chapters"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_opens_with_its_time_at_each_scale(path: Path) -> None:
    first = nbformat.read(path, as_version=4).cells[0].source
    lines = [line for line in first.splitlines() if line.startswith("**Time:**")]
    assert len(lines) == 1, f"{path.name}: its first markdown cell must give its run time in one '**Time:**' line"
    for scale in ("smoke", "tutorial", "paper"):
        assert scale in lines[0], f"{path.name}: the '**Time:**' line must say what the {scale} scale takes"
