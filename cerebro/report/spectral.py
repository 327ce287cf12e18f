"""Figures of frequency attributions (``spectral_integrated_gradients``): importance over frequency in Hz with the
bands shaded, channel x frequency maps, one scalp topomap per band (MNE, through :mod:`cerebro.report.eeg`),
time-frequency maps, and one sample's map for the per-sample figures and the worst-case gallery.

Pure functions returning :class:`matplotlib.figure.Figure` objects built without pyplot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from cerebro.report.eeg import topomap
from cerebro.report.figures import bar, new_figure

__all__ = ["frequency_profile", "channel_frequency_map", "time_frequency_map", "band_topomaps", "spectral_figures",
           "spectral_sample_figure", "gallery_figure"]

_BAND_COLOURS = ("#d9e7f5", "#f5e6d3", "#dff0d8", "#f2dede", "#e8e0f0", "#fcf8e3")


def _shade(ax: Any, bands: Mapping[str, Sequence[Optional[float]]], nyquist: float) -> None:
    for i, (name, (lo, hi)) in enumerate(bands.items()):
        hi = nyquist if hi is None else min(float(hi), nyquist)
        if lo >= nyquist:
            continue
        ax.axvspan(lo, hi, color=_BAND_COLOURS[i % len(_BAND_COLOURS)], alpha=0.6, lw=0, zorder=0)
        ax.text((lo + hi) / 2, 0.98, name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7)


def _channel_label(c: int, names: Sequence[str] | None) -> str:
    return str(names[c]) if names else f"channel {c}"


def frequency_profile(mean_cf: np.ndarray, freqs: np.ndarray, bands: Mapping[str, Sequence[Optional[float]]],
                      channel_names: Sequence[str] | None = None, top: int = 3, title: str = "") -> Figure:
    """Mean |attribution| over frequency (Hz) for the ``top`` channels and the mean over channels, bands shaded."""
    m = np.asarray(mean_cf, dtype=np.float64)
    fig, ax = new_figure(8.0, 3.8)
    _shade(ax, bands, float(freqs[-1]))
    for c in np.argsort(-m.sum(axis=1), kind="stable")[:top]:
        ax.plot(freqs, m[c], lw=1.2, label=_channel_label(int(c), channel_names))
    ax.plot(freqs, m.mean(axis=0), color="k", lw=1.0, ls="--", label="mean over channels")
    ax.set_xlim(float(freqs[0]), float(freqs[-1]))
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("mean |attribution|")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def channel_frequency_map(mean_cf: np.ndarray, freqs: np.ndarray, channel_names: Sequence[str] | None = None,
                          title: str = "", label: str = "mean |attribution|", cmap: str = "magma") -> Figure:
    """Heat map channel x frequency in Hz."""
    m = np.asarray(mean_cf, dtype=np.float64)
    fig, ax = new_figure(8.0, max(3.0, min(10.0, 0.25 * m.shape[0] + 2)))
    df = float(freqs[1] - freqs[0]) if freqs.size > 1 else 1.0
    lim = float(np.abs(m).max()) or 1.0
    kw = {"vmin": -lim, "vmax": lim} if cmap == "RdBu_r" else {}
    im = ax.imshow(m, aspect="auto", cmap=cmap, interpolation="nearest", origin="upper",
                   extent=(float(freqs[0]) - df / 2, float(freqs[-1]) + df / 2, m.shape[0] - 0.5, -0.5), **kw)
    fig.colorbar(im, ax=ax, label=label)
    if channel_names and len(channel_names) <= 40:
        ax.set_yticks(range(len(channel_names)), [str(n) for n in channel_names], fontsize=6)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("channel")
    ax.set_title(title)
    return fig


def time_frequency_map(tf: np.ndarray, freqs: np.ndarray, times: np.ndarray, title: str = "") -> Figure:
    """Heat map frequency (Hz) x time (s) of a ``(F, W)`` map (mean |attribution| summed over channels)."""
    m = np.asarray(tf, dtype=np.float64)
    fig, ax = new_figure(8.0, 4.0)
    df = float(freqs[1] - freqs[0]) if freqs.size > 1 else 1.0
    dt = float(times[1] - times[0]) if times.size > 1 else 1.0
    im = ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest", origin="lower",
                   extent=(float(times[0]) - dt / 2, float(times[-1]) + dt / 2,
                           float(freqs[0]) - df / 2, float(freqs[-1]) + df / 2))
    fig.colorbar(im, ax=ax, label="|attribution|")
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title)
    return fig


def band_topomaps(by_band: np.ndarray, band_names: Sequence[str], channel_names: Sequence[str], montage: str,
                  title: str) -> dict[str, Figure]:
    """One scalp topomap per band of the mean |attribution| per channel in that band (``by_band`` (bands, C))."""
    return {f"topomap_{name}": topomap(by_band[b], channel_names, montage, f"{title}: {name} band on the scalp")
            for b, name in enumerate(band_names)}


def spectral_figures(mean_cf: np.ndarray, freqs: np.ndarray, bands: Mapping[str, Sequence[Optional[float]]],
                     by_band: np.ndarray, channel_names: Sequence[str] | None = None, montage: str | None = None,
                     top: int = 3, tf_map: np.ndarray | None = None, times: np.ndarray | None = None,
                     title: str = "spectral IG") -> dict[str, Figure]:
    """Every summary figure of a run: ``frequency``, ``channel_frequency``, ``bands``, ``topomap_<band>`` (with a
    montage and channel names) and ``time_frequency`` (with ``tf_map``)."""
    figs = {
        "frequency": frequency_profile(mean_cf, freqs, bands, channel_names, top,
                                       f"{title}: importance over frequency (top {min(top, len(mean_cf))} channels)"),
        "channel_frequency": channel_frequency_map(mean_cf, freqs, channel_names,
                                                   f"{title}: mean |attribution|, channel x frequency"),
        "bands": bar(list(bands), by_band.sum(axis=1), f"{title}: |attribution| per band", "mean |attribution|"),
    }
    if montage and channel_names:
        figs.update(band_topomaps(by_band, list(bands), channel_names, montage, title))
    if tf_map is not None and times is not None:
        figs["time_frequency"] = time_frequency_map(tf_map, freqs, times,
                                                    f"{title}: |attribution| over time and frequency")
    return figs


def spectral_sample_figure(x: np.ndarray, attr: np.ndarray, freqs: np.ndarray | None, title: str) -> Figure:
    """One sample's frequency map: signed attribution channel x frequency (``(C, F)``), or |attribution| frequency
    x time-window summed over channels (``(C, F, W)``). ``x`` (the signal) is not drawn; frequencies in Hz when
    known, else in bins."""
    a = np.asarray(attr, dtype=np.float64)
    if not np.isfinite(a).all() or not np.any(a):
        fig, ax = new_figure(5.0, 1.5)
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: degenerate map", ha="center", va="center", color="C3")
        return fig
    f = np.asarray(freqs, dtype=np.float64) if freqs is not None else np.arange(a.shape[1], dtype=np.float64)
    if a.ndim == 3:
        tf = np.abs(a).sum(axis=0)
        fig = time_frequency_map(tf, f, np.arange(tf.shape[1], dtype=np.float64), f"{title}: |attribution|")
        fig.axes[0].set_xlabel("time window")
        return fig
    fig = channel_frequency_map(a, f, None, f"{title}: signed attribution, channel x frequency",
                                label="attribution (real + imaginary)", cmap="RdBu_r")
    if freqs is None:
        fig.axes[0].set_xlabel("frequency bin")
    return fig


def gallery_figure(folder: str | os.PathLike[str], x: np.ndarray, attr: np.ndarray, title: str) -> Figure | None:
    """The gallery's figure for a diagnostic whose arrays folder holds ``frequencies.npy`` (a frequency map), else
    ``None`` (draw the usual time-domain view)."""
    path = Path(folder) / "frequencies.npy"
    if not path.is_file():
        return None
    return spectral_sample_figure(x, attr, np.load(path), title)
