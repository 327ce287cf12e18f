"""Helpers shared by attribution diagnostics: degenerate-map checks and EEG/image summaries of attribution maps."""

from __future__ import annotations

from typing import Any

import numpy as np

from cerebro.engine.degenerate import constant_reason, constant_rows
from cerebro.report.eeg import eeg_figures, time_course
from cerebro.report.figures import bar, heatmap, line
from cerebro.report.writer import DiagnosticOutput

__all__ = ["MapStats", "summarize_maps"]


class MapStats:
    """Streaming checks of attribution maps, one block of samples at a time (nothing is read back from disk)."""

    def __init__(self) -> None:
        self.n = 0
        self.nonfinite = 0
        self.zero_samples = 0
        self.constant_samples = 0
        self.abs_sum: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        flat = block.reshape(block.shape[0], -1)
        self.n += block.shape[0]
        finite = np.isfinite(flat)
        self.nonfinite += int((~finite).sum())
        self.zero_samples += int((~np.any(flat, axis=1)).sum())
        self.constant_samples += int(constant_rows(flat).sum())  # relative range test, shared with the report
        s = np.abs(np.where(np.isfinite(block), block, 0)).astype(np.float64).sum(axis=0)
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s

    def mean_abs(self) -> np.ndarray:
        assert self.abs_sum is not None
        return self.abs_sum / max(self.n, 1)

    def reasons(self) -> list[str]:
        """Why the maps carry no information (NaN, all zero, constant), or an empty list."""
        if self.nonfinite:
            return [f"degenerate map: {self.nonfinite} non-finite values"]
        if self.zero_samples == self.n:
            return ["degenerate map: all values are zero"]
        if self.constant_samples == self.n:  # all-zero maps count as constant too
            return [str(constant_reason(self.n, self.n))]
        reasons = [f"degenerate map: {self.zero_samples} samples have an all-zero map"] if self.zero_samples else []
        flat_nonzero = constant_reason(self.constant_samples - self.zero_samples, self.n)
        return reasons + ([flat_nonzero] if flat_nonzero else [])


def summarize_maps(out: DiagnosticOutput, mean_abs: np.ndarray, input_shape: tuple[int, ...], what: str) -> None:
    """Summaries of the mean absolute map (shape ``input_shape`` or ``(1, *spatial)``): channel/time importance for
    ``(C, T)`` signals, a spatial heatmap for images, bars for flat features."""
    m = np.asarray(mean_abs, dtype=np.float64)
    if len(input_shape) == 2:  # (channels, time) signals
        _signal_summaries(out, m, input_shape, what, getattr(out.writer, "eeg", None))
    elif len(input_shape) == 3 and m.ndim < 2:  # a 1-D map over an image (e.g. a token sequence): a profile
        out.array("spatial_importance", m)
        out.figure(line(m, f"{what}: mean |attribution| per position", "position", "mean |attribution|"), "profile")
    elif len(input_shape) == 3:  # (channels, height, width) images
        spatial = m.reshape(-1, *m.shape[-2:]).mean(axis=0)
        out.array("spatial_importance", spatial)
        out.figure(heatmap(spatial, f"{what}: mean |attribution|", "x", "y"), "heatmap")
    elif len(input_shape) == 1:
        feat = m.reshape(-1)
        out.array("feature_importance", feat)
        out.figure(bar([str(i) for i in range(feat.size)], feat, f"{what}: importance per feature",
                       "mean |attribution|"), "features")


def _signal_summaries(out: DiagnosticOutput, m: np.ndarray, input_shape: tuple[int, ...], what: str,
                      eeg: Any) -> None:
    """Channel and time importance of a ``(C, T)`` (or time-only layer) map; with an EEG description (``eeg``
    option) the channels carry their names, time is in seconds and a montage adds a scalp topomap."""
    c, t = input_shape
    full = m.shape == (c, t)
    time = m.reshape(-1, m.shape[-1]).mean(axis=0)
    if full:
        channel = m.mean(axis=1)
        top = np.argsort(-channel)[:10]
        out.metric("channel_importance", channel)
        out.array("channel_importance", channel)
        out.metric("top_channels", top)
        if eeg is not None and eeg.channel_names:
            out.metric("top_channel_names", [eeg.channel_names[i] for i in top])
        out.figure(heatmap(m, f"{what}: mean |attribution|, channel x time", "time (samples)", "channel",
                           sfreq=getattr(eeg, "sfreq", None), row_labels=getattr(eeg, "channel_names", None),
                           colorbar="mean |attribution|"), "heatmap")
    out.array("time_importance", time)
    out.metric("peak_time_index", int(np.argmax(time)))
    if eeg is not None and eeg.sfreq:
        out.metric("peak_time_s", float(np.argmax(time) / eeg.sfreq))
    if eeg is not None and full:
        figures = eeg_figures(m, eeg, what)
    elif eeg is not None:
        figures = {"time": time_course(time, eeg.sfreq, f"{what}: importance over time")}
    else:
        figures = {"time": line(time, f"{what}: importance over time", "time (samples)", "mean |attribution|")}
        if full:
            figures = {"channels": bar([str(i) for i in range(c)], channel, f"{what}: importance per channel",
                                       "mean |attribution|"), **figures}
    for key, fig in figures.items():
        out.figure(fig, key)
