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
    path = root / "ersam_lib" / "evaluation.py"
    path.write_text(path.read_text() + "\n\ndef late():\n    from .ablation import run_ablation\n")
    problems = check(root)
    n = len(path.read_text().splitlines())
    assert problems == [f"ersam_lib/evaluation.py:{n}: upward import: ersam_lib.evaluation (data, evaluation and "
                        f"measurement) imports ersam_lib.ablation (experiments)"]


def test_a_private_import_is_named_in_modules_and_notebooks(tmp_path):
    import json

    root = _copy(tmp_path)
    path = root / "ersam_lib" / "ablation.py"
    path.write_text(path.read_text() + "\nfrom .train import _unwrap\n")
    nb_path = root / "notebooks" / "04_supernet.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "from ersam_lib.costmodel import _macs\n",
                        "outputs": [], "execution_count": None, "id": "x"})
    nb_path.write_text(json.dumps(nb))
    problems = check(root)
    assert any(p.startswith("ersam_lib/ablation.py:") and "private import: ersam_lib.ablation takes _unwrap" in p
               for p in problems), problems
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
    for path in sorted((ROOT / "ersam_lib").glob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        listed = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                       and any(getattr(t, "id", None) == "__all__" for t in n.targets)), None)
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                   and not n.name.startswith("_")]
        if listed is None:
            missing.append(f"{path.name}: no __all__")
        else:
            missing += [f"{path.name}: {name} not in __all__" for name in defined if name not in listed]
    assert missing == []
