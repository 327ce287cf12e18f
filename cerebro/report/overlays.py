"""Per-sample views of attribution maps: Captum's blended heat maps over images (``captum.attr.visualization``),
channel x time maps over EEG signals, bars for flat features."""

from __future__ import annotations

import numpy as np
from captum.attr import visualization as viz
from matplotlib.figure import Figure

from cerebro.engine.degenerate import is_constant
from cerebro.report.figures import bar, heatmap, new_figure

__all__ = ["sample_figure"]


def _hwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (1, 2, 0))


def sample_figure(x: np.ndarray, attr: np.ndarray, title: str) -> Figure:
    """One sample's input ``x`` with its map ``attr`` (input-shaped, or ``(1, *spatial)`` for layer maps)."""
    if not np.isfinite(attr).all() or is_constant(attr):  # say so instead of drawing an empty, flat or broken map
        fig, ax = new_figure(5.0, 1.5)
        ax.axis("off")
        kind = "non-finite" if not np.isfinite(attr).all() else "all zero" if not np.any(attr) else "constant"
        ax.text(0.5, 0.5, f"{title}: degenerate map ({kind})", ha="center", va="center", color="C3")
        return fig
    if x.ndim == 3 and attr.ndim == 3 and attr.shape[-2:] == x.shape[-2:]:  # images (C, H, W)
        img = x - x.min()
        img = img / img.max() if img.max() > 0 else img
        fig, _ = viz.visualize_image_attr(_hwc(attr.astype(np.float64)), _hwc(img.astype(np.float64)),
                                          method="blended_heat_map", sign="absolute_value", use_pyplot=False,
                                          show_colorbar=True, title=title)
        return fig
    if x.ndim == 2:  # signals (C, T)
        if attr.shape == x.shape:
            return heatmap(np.abs(attr), f"{title}: |attribution|, channel x time", "time sample", "channel")
        fig, ax = new_figure(8.0, 3.5)
        ax.plot(np.abs(x).mean(axis=0), color="0.6", lw=0.8, label="mean |signal| over channels")
        ax2 = ax.twinx()
        ax2.plot(np.abs(attr.reshape(-1, x.shape[-1])).mean(axis=0), color="C3", label="|map| over time")
        ax.set_xlabel("time sample")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="upper right", fontsize=7)
        return fig
    flat = np.abs(attr.reshape(-1))
    return bar([str(i) for i in range(flat.size)], flat, title, "|attribution|")
