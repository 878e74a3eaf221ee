"""Progress bars for long work that stay quiet when no one is watching.

Under papermill or CI a tqdm bar would flood the executed notebook and the log, so bars show only on an interactive
terminal or notebook, unless ``ERSAM_PROGRESS=1`` forces them on (``0`` forces them off).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when progress bars should be drawn (interactive session, or ``ERSAM_PROGRESS=1``)."""
    flag = os.environ.get("ERSAM_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    if os.environ.get("PAPERMILL_EXECUTION") or os.environ.get("CI"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless :func:`progress_enabled`."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
