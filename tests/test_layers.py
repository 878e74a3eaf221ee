"""The import layers hold (tests/layering.py): no upward import, no private import, in the library and notebooks."""

import shutil
from pathlib import Path

from .layering import check

ROOT = Path(__file__).resolve().parents[1]


def test_the_checkout_obeys_the_layers():
    assert check(ROOT) == []


def _copy(tmp_path: Path) -> Path:
    for name in ("ersam_lib", "data_prep", "notebooks"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "recorded"))
    return tmp_path


def test_an_upward_import_is_named_with_file_and_line(tmp_path):
    root = _copy(tmp_path)
    path = root / "ersam_lib" / "measure" / "evaluation.py"
    path.write_text(path.read_text() + "\n\ndef late():\n    from ..experiments.ablation import run_ablation\n")
    problems = check(root)
    n = len(path.read_text().splitlines())
    assert problems == [f"ersam_lib/measure/evaluation.py:{n}: upward import: ersam_lib.measure.evaluation (data, "
                        f"evaluation and measurement) imports ersam_lib.experiments.ablation (experiments)"]


def test_a_private_import_is_named_in_modules_and_notebooks(tmp_path):
    import json

    root = _copy(tmp_path)
    path = root / "ersam_lib" / "experiments" / "ablation.py"
    path.write_text(path.read_text() + "\nfrom ..training.train import _unwrap\n")
    nb_path = root / "notebooks" / "04_supernet.ipynb"
    nb = json.loads(nb_path.read_text())
    source = "from ersam_lib.measure.costmodel import _macs\n"
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None,
                        "id": "x"})
    nb_path.write_text(json.dumps(nb))
    problems = check(root)
    assert any(p.startswith("ersam_lib/experiments/ablation.py:")
               and "private import: ersam_lib.experiments.ablation takes _unwrap" in p for p in problems), problems
    assert any(p.startswith("notebooks/04_supernet.ipynb: code cell") and "_macs" in p for p in problems), problems
    assert len(problems) == 2


def test_a_module_without_a_layer_is_reported(tmp_path):
    root = _copy(tmp_path)
    (root / "ersam_lib" / "newthing.py").write_text("x = 1\n")
    assert check(root) == ["ersam_lib/newthing.py: module ersam_lib.newthing has no layer; add it to "
                           "tests/layering.py"]


def test_every_module_lists_its_public_names():
    """``__all__`` names every public class and function a module defines (what readers and docs look for)."""
    import ast

    missing = []
    for path in sorted((ROOT / "ersam_lib").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        listed = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                       and any(getattr(t, "id", None) == "__all__" for t in n.targets)), None)
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                   and not n.name.startswith("_")]
        if listed is None:
            missing.append(f"{path.relative_to(ROOT)}: no __all__")
        else:
            missing += [f"{path.relative_to(ROOT)}: {name} not in __all__" for name in defined if name not in listed]
    assert missing == []


def test_the_readme_draws_the_architecture_of_the_code():
    """Issue 31: the README's architecture section is the generated one (stages from the registry, layers from the
    tree), so that it cannot go stale."""
    from ersam_lib.app.architecture import architecture_markdown

    readme = (ROOT / "README.md").read_text()
    drawn = readme.split("<!-- architecture:begin -->\n", 1)[1].split("\n<!-- architecture:end -->", 1)[0]
    assert drawn == architecture_markdown(ROOT)
    for pkg in ("core", "measure", "models", "training", "experiments", "app"):
        assert f"`ersam_lib/{pkg}/`" in drawn
