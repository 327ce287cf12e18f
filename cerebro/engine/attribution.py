"""Helpers shared by attribution diagnostics: degenerate-map checks and EEG/image summaries of attribution maps."""

from __future__ import annotations

import numpy as np

from cerebro.report.figures import bar, heatmap, line
from cerebro.report.writer import DiagnosticOutput

__all__ = ["degenerate_reasons", "summarize_maps"]


def degenerate_reasons(maps: np.ndarray) -> list[str]:
    """Why a set of attribution maps carries no information (NaN, all zero, constant), or an empty list."""
    finite = np.isfinite(maps)
    if not finite.all():
        return [f"degenerate map: {int((~finite).sum())} non-finite values"]
    if not np.any(maps):
        return ["degenerate map: all values are zero"]
    per_sample = maps.reshape(maps.shape[0], -1)
    constant = np.ptp(per_sample, axis=1) == 0
    if constant.all():
        return ["degenerate map: every sample's map is constant"]
    reasons = []
    if np.any(~np.any(per_sample, axis=1)):
        reasons.append(f"degenerate map: {int((~np.any(per_sample, axis=1)).sum())} samples have an all-zero map")
    return reasons


def summarize_maps(out: DiagnosticOutput, mean_abs: np.ndarray, input_shape: tuple[int, ...], what: str) -> None:
    """Summaries of the mean absolute map (shape ``input_shape`` or ``(1, *spatial)``): channel/time importance for
    ``(C, T)`` signals, a spatial heatmap for images, bars for flat features."""
    m = np.asarray(mean_abs, dtype=np.float64)
    if len(input_shape) == 2:  # (channels, time) signals
        c, t = input_shape
        if m.shape == (c, t):
            out.metric("channel_importance", m.mean(axis=1))
            out.array("channel_importance", m.mean(axis=1))
            out.metric("top_channels", np.argsort(-m.mean(axis=1))[:10])
            out.figure(heatmap(m, f"{what}: mean |attribution|, channel x time", "time sample", "channel"), "heatmap")
            out.figure(bar([str(i) for i in range(c)], m.mean(axis=1), f"{what}: importance per channel",
                           "mean |attribution|"), "channels")
        time = m.reshape(-1, m.shape[-1]).mean(axis=0)
        out.array("time_importance", time)
        out.metric("peak_time_index", int(np.argmax(time)))
        out.figure(line(time, f"{what}: importance over time", "time sample", "mean |attribution|"), "time")
    elif len(input_shape) == 3:  # (channels, height, width) images
        spatial = m.reshape(-1, *m.shape[-2:]).mean(axis=0)
        out.array("spatial_importance", spatial)
        out.figure(heatmap(spatial, f"{what}: mean |attribution|", "x", "y"), "heatmap")
    elif len(input_shape) == 1:
        feat = m.reshape(-1)
        out.array("feature_importance", feat)
        out.figure(bar([str(i) for i in range(feat.size)], feat, f"{what}: importance per feature",
                       "mean |attribution|"), "features")
