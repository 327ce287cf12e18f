"""Small matplotlib helpers (object API only: no pyplot state, safe in headless runs and threads)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["new_figure", "bar", "heatmap", "line"]


def new_figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def bar(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, log: bool = False) -> Figure:
    fig, ax = new_figure(max(6.0, 0.35 * len(labels)), 4.0)
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(labels)), [str(s) for s in labels], rotation=75, fontsize=7)
    finite = np.asarray(values, dtype=np.float64)
    if log and np.any(np.isfinite(finite) & (finite > 0)):  # matplotlib cannot log-scale all-NaN or zero data
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return fig


def heatmap(data: np.ndarray, title: str, xlabel: str, ylabel: str, cmap: str = "magma") -> Figure:
    fig, ax = new_figure(8.0, 5.0)
    im = ax.imshow(np.asarray(data), aspect="auto", cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def line(values: np.ndarray, title: str, xlabel: str, ylabel: str) -> Figure:
    fig, ax = new_figure(7.0, 3.5)
    ax.plot(np.asarray(values))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig
