"""The book's architecture as the README draws it: the stages (from the registry) and the layers (from the tree).

:func:`architecture_markdown` renders both from the code itself, so the README's section cannot go stale: a test
compares them. The layers are the sub-packages of :mod:`ersam_lib`, in :data:`LAYER_PACKAGES` order (imports flow
from later to earlier ones only; ``tests/layering.py`` enforces it), with ``data_prep`` beside ``measure``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.stages import STAGES

__all__ = ["LAYER_PACKAGES", "architecture_markdown"]

# The layers, bottom up: (sub-package, what it holds). data_prep, chapter 1's data set, sits in layer 1 beside measure.
LAYER_PACKAGES: tuple[tuple[str, str], ...] = (
    ("core", "files, the run folder, the registry of stages, scales, the typed hand-offs"),
    ("measure", "data access, evaluation, export and timing, devices, the cost model"),
    ("models", "the search space, the supernet, the baselines, the teachers"),
    ("training", "distillation, the supernet trainer, supervised fitting"),
    ("experiments", "each chapter's experiment"),
    ("app", "the runner, the command line, the book, the comparison with the reference"),
)


def _modules(folder: Path) -> list[str]:
    """The modules and sub-packages of a package folder, by name (``search/`` for a sub-package)."""
    names = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
    names += [f"{p.name}/" for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    return sorted(names)


def architecture_markdown(root: str | os.PathLike | None = None) -> str:
    """The stage table and the layer table of the checkout at ``root`` (default: this one), as Markdown."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    lines = ["Stages (`ersam_lib/core/stages.py`): each chapter is a notebook and one registry entry; it hands its",
             "results on through the files it writes into `RUN_DIR`, and records only the metrics it declares.", "",
             "| chapter | stage | notebook | writes into `RUN_DIR` | metrics declared |", "|---|---|---|---|---:|"]
    for s in STAGES:
        files = ", ".join(f"`{s.folder}/{name}`" for name in s.files.values()) or (f"`{s.folder}/`" if s.folder
                                                                                    else "nothing")
        lines.append(f"| {s.chapter} | `{s.label}` | `notebooks/{s.notebook}.ipynb` | {files} | {len(s.metrics)} |")
    lines += ["", "Layers (one sub-package of `ersam_lib` each; a module imports only from its own layer and the ones",
              "below it, `tests/layering.py`):", "", "| layer | package | what it holds | modules |",
              "|---:|---|---|---|"]
    for i, (pkg, what) in enumerate(LAYER_PACKAGES):
        modules = ", ".join(f"`{m}`" for m in _modules(root / "ersam_lib" / pkg))
        lines.append(f"| {i} | `ersam_lib/{pkg}/` | {what} | {modules} |")
        if pkg == "measure":
            data = ", ".join(f"`{m}`" for m in _modules(root / "data_prep"))
            lines.append(f"| {i} | `data_prep/` | chapter 1's data set (LibriSpeech-SAM) | {data} |")
    return "\n".join(lines)
