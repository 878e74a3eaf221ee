"""The import layers of the library (STYLE.md, "Imports flow one way") and a checker that names each violation.

A module imports only from its own layer or below; no module imports another module's private (``_name``) names;
notebooks import only public names. Every module of ``ersam_lib`` and ``data_prep`` must be assigned a layer here,
so a new module states where it belongs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ersam_lib.app.architecture import LAYER_PACKAGES

PACKAGES = ("ersam_lib", "data_prep")
LAYER_NAMES = ("core", "data, evaluation and measurement", "models", "training", "experiments", "runner and CLI")
# The tree shows the layers: each sub-package of ersam_lib is one layer (ersam_lib.app.architecture lists them in
# order), and every module in it belongs to it.
LAYERS: dict[str, int] = {"ersam_lib": 0, "ersam_lib.__main__": 5} | {
    f"ersam_lib.{pkg}": i for i, (pkg, _) in enumerate(LAYER_PACKAGES)}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of a module (a package's modules share the package's); ``data_prep`` (chapter 1's data building)
    is data access, layer 1, except its CLI."""
    for name in (module, *(module.rsplit(".", n)[0] for n in range(1, module.count(".")))):  # not "ersam_lib"
        if name in LAYERS:
            return LAYERS[name]
    if module in ("data_prep.cli", "data_prep.__main__"):
        return 5
    if module == "data_prep" or module.startswith("data_prep."):
        return 1
    return None


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_pkg else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.AST, importer: str, is_pkg: bool, modules: set[str]):
    """``(line, target module, imported name or None)`` for every project import, function-level ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(importer, is_pkg, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield (node.lineno, sub, None) if sub in modules else (node.lineno, target, a.name)


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not name.startswith("__")


def check(root: str | Path) -> list[str]:
    """Every layering problem under ``root`` (a checkout), one line each, naming the file and the line."""
    root = Path(root)
    files = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    problems = []
    for mod, path in files.items():
        mine = layer_of(mod)
        if mine is None:
            problems.append(f"{path.relative_to(root)}: module {mod} has no layer; add it to tests/layering.py")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, target, name in _imports(tree, mod, path.name == "__init__.py", set(files)):
            theirs = layer_of(target)
            where = f"{path.relative_to(root)}:{line}"
            if theirs is not None and theirs > mine:
                problems.append(f"{where}: upward import: {mod} ({LAYER_NAMES[mine]}) imports {target} "
                                f"({LAYER_NAMES[theirs]})")
            if _private(name) and target != mod:
                problems.append(f"{where}: private import: {mod} takes {name} from {target}")
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(cells, start=1):
            src = "".join(cell["source"])
            code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
            for line, target, name in _imports(ast.parse(code), "notebook", False, set(files)):
                if _private(name) or any(_private(p) for p in target.split(".")):
                    problems.append(f"{nb.relative_to(root)}: code cell {i}, line {line}: private import of "
                                    f"{name or target} from {target}")
    return problems
