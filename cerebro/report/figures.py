"""Small matplotlib helpers (object API only: no pyplot state, safe in headless runs and threads).

Axes say what they show: seconds when the sampling rate is known, channel names when known, integer ticks for
indices otherwise; a chart with nothing to draw (every value 0) is a sentence instead of empty axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["new_figure", "bar", "heatmap", "line", "note_figure", "time_axis", "signal_panel", "MAX_TICK_LABELS"]

#: Up to this many rows / columns, every one gets its own tick label (class, channel or layer names).
MAX_TICK_LABELS = 40


def new_figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def note_figure(text: str, width: float = 6.0, height: float = 1.2) -> Figure:
    """A figure that is one sentence: said instead of drawing an empty chart."""
    fig, ax = new_figure(width, height)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def bar(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, log: bool = False,
        empty: Optional[str] = None) -> Figure:
    """Bars labelled ``labels``. When every value is 0 (or none is finite) the figure is the sentence ``empty``
    (default: "<title>: 0 for all <n>") rather than a chart without bars."""
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = vals[np.isfinite(vals)]
    if vals.size == 0 or not np.any(finite):
        what = "no finite value" if finite.size == 0 else f"0 for all {vals.size}"
        return note_figure(empty or f"{title}: {what}.")
    fig, ax = new_figure(max(6.0, 0.35 * len(labels)), 4.0)
    ax.bar(range(len(vals)), vals)
    ax.set_xticks(range(len(labels)), [str(s) for s in labels], rotation=75 if len(labels) > 6 else 0, fontsize=7)
    if log and np.any(finite > 0):  # matplotlib cannot log-scale all-NaN or zero data
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return fig


def _label_axis(axis: Any, n: int, labels: Optional[Sequence[str]]) -> None:
    """Every row/column labelled when there are few, else integer ticks (never -0.5, 0.5 ...)."""
    if labels is not None and n <= MAX_TICK_LABELS:
        axis.set_ticks(range(n), [str(s) for s in labels])
    elif labels is None and n <= 20:
        axis.set_ticks(range(n))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def heatmap(data: np.ndarray, title: str, xlabel: str, ylabel: str, cmap: str = "magma",
            row_labels: Optional[Sequence[str]] = None, col_labels: Optional[Sequence[str]] = None,
            sfreq: Optional[float] = None, annotate: Optional[bool] = None, colorbar: str = "") -> Figure:
    """An image of a 2-D array. Rows (and columns, unless ``sfreq`` makes them a time axis in seconds) are labelled
    one by one up to 40, else with integer ticks. ``annotate`` writes each cell's value (default: for integer
    matrices up to 15 x 15, e.g. a confusion matrix)."""
    a = np.asarray(data)
    if a.ndim == 1:
        a = a[None]
    rows, cols = a.shape
    fig, ax = new_figure(8.0, max(3.0, min(8.0, 1.2 + 0.3 * rows)) if rows > 1 else 2.5)
    extent = None
    if sfreq:
        extent = (-0.5 / sfreq, (cols - 0.5) / sfreq, rows - 0.5, -0.5)
    im = ax.imshow(a, aspect="auto", cmap=cmap, interpolation="nearest", extent=extent)
    cb = fig.colorbar(im, ax=ax)
    if colorbar:
        cb.set_label(colorbar)
    _label_axis(ax.yaxis, rows, row_labels)
    if not sfreq:
        _label_axis(ax.xaxis, cols, col_labels)
    if annotate is None:
        annotate = np.issubdtype(a.dtype, np.integer) and rows <= 15 and cols <= 15
    if annotate:
        hi = float(np.max(a)) if a.size else 0.0
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > 0.6 * hi else "black")
    ax.set_title(title)
    ax.set_xlabel("time (s)" if sfreq else xlabel)
    ax.set_ylabel(ylabel)
    return fig


def time_axis(n: int, sfreq: Optional[float]) -> tuple[np.ndarray, str]:
    """Positions and label of a time axis of ``n`` samples: seconds when ``sfreq`` is known, else samples."""
    return (np.arange(n) / float(sfreq), "time (s)") if sfreq else (np.arange(n), "time (samples)")


def line(values: np.ndarray, title: str, xlabel: str, ylabel: str, sfreq: Optional[float] = None) -> Figure:
    v = np.asarray(values).reshape(-1)
    fig, ax = new_figure(7.0, 3.5)
    x, label = time_axis(v.size, sfreq) if sfreq or xlabel.startswith("time") else (np.arange(v.size), xlabel)
    ax.plot(x, v)
    if not sfreq:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(label)
    ax.set_ylabel(ylabel)
    return fig


def signal_panel(ax: Any, x: np.ndarray, attr: np.ndarray, sfreq: Optional[float] = None,
                 channel_names: Optional[Sequence[str]] = None, max_channels: int = 20,
                 rows: Optional[Sequence[int]] = None) -> tuple[Any, list[int]]:
    """Draw a ``(C, T)`` signal ``x`` as stacked traces over its map: ``attr`` ``(C, T)`` as a channel x time
    background, or a time-only ``(1, T)`` / ``(T,)`` map as a band behind every trace (one axis, no twin scale).
    With more than ``max_channels`` channels only those with the largest map (or ``rows``) are drawn. Returns the
    image (for a colorbar) and the channels drawn."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(np.asarray(attr, dtype=np.float64))
    c, t = x.shape
    full = a.size == c * t
    a2 = a.reshape(c, t) if full else np.broadcast_to(a.reshape(1, t), (c, t))
    if rows is None:
        rows = list(range(c)) if c <= max_channels else sorted(
            np.argsort(-(a2.sum(axis=1) if full else np.abs(x).sum(axis=1)), kind="stable")[:max_channels].tolist())
    rows = [int(r) for r in rows]
    shown = x[rows]
    scale = float(np.nanmax(np.abs(shown))) or 1.0
    step = 1.0 / sfreq if sfreq else 1.0
    extent = (-0.5 * step, (t - 0.5) * step, len(rows) - 0.5, -0.5)
    im = ax.imshow(a2[rows] if full else a2[rows[:1]].repeat(len(rows), axis=0), aspect="auto", cmap="Reds",
                   interpolation="nearest", extent=extent, vmin=0)
    times = np.arange(t) * step
    for k in range(len(rows)):
        ax.plot(times, k - 0.45 * shown[k] / scale, color="0.1", lw=0.6)
    names = [str(channel_names[r]) if channel_names is not None else str(r) for r in rows]
    ax.set_yticks(range(len(rows)), names, fontsize=7 if len(rows) > 12 else 8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_xlabel("time (s)" if sfreq else "time (samples)")
    ax.set_ylabel("channel")
    return im, rows
