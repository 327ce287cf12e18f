"""Per-sample views of attribution maps: Captum's blended heat maps over images (``captum.attr.visualization``),
EEG-like signals as traces over their map (channel x time, or a time band for layer maps), bars for flat features;
and :func:`methods_figure`, one sample's input under every method's map (the report's worst-case gallery)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from captum.attr import visualization as viz
from matplotlib.figure import Figure

from cerebro.engine.degenerate import is_constant
from cerebro.report.figures import bar, new_figure, signal_panel

__all__ = ["sample_figure", "signal_figure", "methods_figure", "fits"]


def _hwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (1, 2, 0))


def sample_figure(x: np.ndarray, attr: np.ndarray, title: str, eeg: Any = None) -> Figure:
    """One sample's input ``x`` with its map ``attr`` (input-shaped, or ``(1, *spatial)`` for layer maps); ``eeg``
    (:class:`cerebro.report.eeg.EEGInfo`) puts seconds and channel names on signal axes."""
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
    if x.ndim == 2 and attr.size in (x.size, x.shape[-1]):  # signals (C, T), map (C, T) or time-only (1, T)
        return signal_figure(x, [(title, attr, "")], eeg)
    flat = np.abs(attr.reshape(-1))
    return bar([str(i) for i in range(flat.size)], flat, title, "|attribution|")


def _degenerate(attr: np.ndarray) -> str | None:
    if not np.isfinite(attr).all():
        return "non-finite"
    if is_constant(attr):
        return "all zero" if not np.any(attr) else "constant"
    return None


def signal_figure(x: np.ndarray, panels: Sequence[tuple[str, np.ndarray, str]], eeg: Any = None,
                  suptitle: str = "") -> Figure:
    """A ``(C, T)`` signal drawn once per panel ``(title, map, note)``, its traces over that map; one row per panel,
    sharing the time axis (seconds when ``eeg.sfreq`` is known) and the channels shown (the channels with the most
    attribution in the first full map when there are more than 20)."""
    sfreq = getattr(eeg, "sfreq", None)
    names = getattr(eeg, "channel_names", None)
    c = x.shape[0]
    shown = min(c, 20)
    fig = Figure(figsize=(11.0, 0.9 + len(panels) * (0.9 + 0.2 * shown)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    rows = None
    if c > 20:
        first = next((np.abs(np.nan_to_num(m)).reshape(c, -1).sum(1) for _, m, _ in panels if m.size == x.size), None)
        rows = sorted(np.argsort(-(first if first is not None else np.abs(x).sum(1)), kind="stable")[:20].tolist())
    for ax, (title, attr, note) in zip(axes, panels):
        why = _degenerate(attr)
        if why:
            ax.set_yticks([])
            ax.text(0.5, 0.5, f"degenerate map ({why})", transform=ax.transAxes, ha="center", va="center", color="C3")
            ax.set_title(title + (f" - {note}" if note else ""), fontsize=9, loc="left")
            continue
        im, drawn = signal_panel(ax, x, attr, sfreq, names, rows=rows)
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03).set_label("|attribution|", fontsize=7)
        layer = attr.size != x.size
        ax.set_title(title + (" (time-only layer map, a band behind every channel)" if layer else "")
                     + (f" - {note}" if note else ""), fontsize=9, loc="left", color="C3" if note else "black")
        if len(drawn) < c:
            ax.set_ylabel(f"channel ({len(drawn)} of {c})")
    for ax in axes[:-1]:
        ax.set_xlabel("")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def fits(x: np.ndarray, attr: np.ndarray) -> bool:
    """Whether ``attr`` can be drawn over the input ``x``: a ``(C, T)`` or time-only map of a signal, or a map with
    the image's height and width (maps in other units, e.g. over frequency, cannot)."""
    if x.ndim == 2:
        return attr.size in (x.size, x.shape[-1])
    return x.ndim == 3 and attr.ndim == 3 and attr.shape[-2:] == x.shape[-2:]


def methods_figure(x: np.ndarray, maps: Sequence[tuple[str, np.ndarray, str]], eeg: Any = None,
                   suptitle: str = "") -> Figure | None:
    """One sample's input under each method's map, ``maps`` = ``[(method, map, note)]`` (the note, e.g. "failed
    sanity checks", is printed in the panel's title). Signals: :func:`signal_figure`; images: the input, then each
    method's blended heat map, in one row. None for inputs it cannot draw together (the caller falls back to one
    :func:`sample_figure` per method)."""
    if x.ndim == 2 and all(m.size in (x.size, x.shape[-1]) for _, m, _ in maps):
        return signal_figure(x, maps, eeg, suptitle)
    if x.ndim == 3 and all(m.ndim == 3 and m.shape[-2:] == x.shape[-2:] for _, m, _ in maps):
        img = x - x.min()
        img = img / img.max() if img.max() > 0 else img
        fig = Figure(figsize=(3.2 * (len(maps) + 1), 3.6), layout="constrained")
        axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
        rgb = _hwc(img.astype(np.float64))
        axes[0].imshow(rgb if rgb.shape[-1] == 3 else rgb[..., 0], cmap=None if rgb.shape[-1] == 3 else "gray")
        axes[0].set_title("input", fontsize=9)
        axes[0].axis("off")
        for ax, (name, attr, note) in zip(axes[1:], maps):
            why = _degenerate(attr)
            if why:
                ax.axis("off")
                ax.text(0.5, 0.5, f"degenerate map ({why})", ha="center", va="center", color="C3")
            else:
                viz.visualize_image_attr(_hwc(attr.astype(np.float64)), rgb, method="blended_heat_map",
                                         sign="absolute_value", use_pyplot=False, plt_fig_axis=(fig, ax))
            ax.set_title(name + (f"\n{note}" if note else ""), fontsize=9, color="C3" if note else "black")
        if suptitle:
            fig.suptitle(suptitle, fontsize=10)
        return fig
    return None

