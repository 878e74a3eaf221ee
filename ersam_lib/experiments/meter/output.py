"""The meter's table written out (chapter 6): CSV or JSON, and the timeline plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


from ...core.io import atomic_path, atomic_write_json
from .base import LEVEL_NAMES, WINDOW_S, MeterError

__all__ = ["LEVEL_COLOURS", "format_windows", "output_format", "plot_format", "plot_timeline", "to_json",
           "write_windows"]


def to_json(df: pd.DataFrame) -> dict[str, Any]:
    """``{"meta": df.attrs, "windows": [one dict per window]}`` (missing counts become null)."""
    return {"meta": dict(df.attrs), "windows": json.loads(df.to_json(orient="records", double_precision=6))}


def output_format(path: str | os.PathLike) -> str:
    """``csv`` or ``json`` from a file name; :class:`MeterError` for any other suffix."""
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in ("csv", "json"):
        raise MeterError(f"cannot tell the output format of {path}: use a .csv or .json name")
    return fmt


def plot_format(path: str | os.PathLike) -> str:
    """The image format of a plot file name (``png``, ``pdf``, ``svg``, ... what matplotlib writes); :class:`MeterError`
    for any other suffix, so that a bad name is refused before the work."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = Path(path).suffix.lstrip(".").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise MeterError(f"cannot tell the image format of {path}: use one of {', '.join('.' + k for k in known)}")
    return fmt


def write_windows(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write the meter's table atomically as CSV or JSON (``fmt`` or the file suffix decides)."""
    path = Path(path)
    fmt = fmt or output_format(path)
    if fmt == "csv":
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    elif fmt == "json":
        atomic_write_json(path, to_json(df))
    else:
        raise MeterError(f"format must be csv or json, got {fmt!r}")
    return path


def format_windows(df: pd.DataFrame, fmt: str = "csv") -> str:
    """The table as CSV or JSON text (what the CLI prints)."""
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        return json.dumps(to_json(df), indent=2) + "\n"
    raise MeterError(f"format must be csv or json, got {fmt!r}")


LEVEL_COLOURS = {"none": "#d9d9d9", "low": "#a6d96a", "moderate": "#fdae61", "active": "#d7191c"}


def plot_timeline(df: pd.DataFrame, path: str | os.PathLike | None = None, truth: Sequence[int] | None = None,
                  title: str | None = None) -> Any:
    """The meter's counts over time on a background coloured by ambiance level; ``truth`` (counts per window)
    is drawn dashed. Saved atomically when ``path`` is given (format from its suffix). Returns the figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()

    mid = ((df["start_s"] + df["end_s"]) / 2).to_numpy()
    half = float(min(df.attrs.get("hop_s", WINDOW_S), df.attrs.get("window_s", WINDOW_S))) / 2
    for m, level in zip(mid, df["level"]):
        ax.axvspan(m - half, m + half, color=LEVEL_COLOURS[level], alpha=0.35, lw=0)
    if df["count"].notna().all():
        ax.plot(mid, df["count"].to_numpy(float), drawstyle="steps-mid", color="k", lw=1.3, label="meter")
        ax.set_ylabel("speakers")
    else:
        ax.plot(mid, [LEVEL_NAMES.index(v) for v in df["level"]], drawstyle="steps-mid", color="k", label="meter")
        ax.set_yticks(range(len(LEVEL_NAMES)), LEVEL_NAMES)
    if truth is not None:
        ax.plot(mid, np.asarray(truth, float), drawstyle="steps-mid", color="tab:blue", ls="--", lw=1.2,
                label="annotation")
    ax.set_xlabel("time (s)")
    ax.set_xlim(float(df["start_s"].min()), float(df["end_s"].max()))
    handles = ax.get_legend_handles_labels()[0] + [Patch(color=LEVEL_COLOURS[n], alpha=0.35, label=n)
                                                  for n in LEVEL_NAMES]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"social ambiance of {df.attrs.get('source', 'the recording')}")
    if path is not None:
        path = Path(path)
        fmt = plot_format(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=fmt)
    return fig

