"""The three run scales of the book (the README's table; chapter 0 introduces them).

- ``smoke``: seconds to minutes per notebook on 2 CPU cores; what CI runs. Numbers are meaningless, paths are real.
- ``tutorial``: the default; the whole book in about an hour on a laptop CPU on the built-in offline speech.
- ``paper``: LibriSpeech, a GPU, the full search. Same code, bigger parameters.

Each stage keeps its own ``dataclass`` config with a ``for_scale(scale)`` constructor; this module only names the
scales and validates them, so that a typo fails loudly instead of silently running the wrong size.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["check_scale"]

Scale = Literal["smoke", "tutorial", "paper"]
SCALES: tuple[str, ...] = ("smoke", "tutorial", "paper")


def check_scale(scale: str) -> Scale:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise ``ValueError`` naming the valid ones."""
    if scale not in SCALES:
        raise ValueError(f"unknown SCALE {scale!r}; expected one of {', '.join(SCALES)}")
    return scale  # type: ignore[return-value]
