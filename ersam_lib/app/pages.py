"""What the chapters show besides their results: the library's own source, at the point the text explains it.

:func:`show_source` renders functions, classes or methods of the library as one Markdown code block each, headed by
where they live, so that a chapter's page shows the very code that produced its numbers (one source of truth: the
page is rendered from the module, never copied into the notebook). A shown object longer than ``max_lines`` is
refused: split it where it is too long to read on a page. Used by chapters 1 to 6.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

from IPython.display import Markdown

__all__ = ["show_source", "source_of"]


def source_of(obj: Any, max_lines: int = 45) -> str:
    """The dedented source of ``obj`` with a first comment line naming it (``# module.Qualified.name``)."""
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as e:
        raise ValueError(f"no source to show for {obj!r}: {e}") from None
    name = f"{obj.__module__}.{obj.__qualname__}"
    n = len(src.splitlines())
    if n > max_lines:
        raise ValueError(f"{name} is {n} lines long, over the {max_lines} a page shows: split it, or show a part")
    return f"# {name}\n{src}"


def show_source(*objs: Any, max_lines: int = 45) -> Markdown:
    """One Markdown code block per object: what the chapter's page displays (chapters 1-6)."""
    if not objs:
        raise ValueError("show_source needs at least one function, class or method")
    return Markdown("\n\n".join(f"```python\n{source_of(o, max_lines)}```" for o in objs))
