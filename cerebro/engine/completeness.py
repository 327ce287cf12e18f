"""Completeness (Sundararajan et al. 2017, "summation to delta" in DeepLIFT): the attributions of one sample add up
to ``f(x) - f(baseline)``. One helper measures it for every method that claims it (integrated gradients, DeepLift,
GradientShap in expectation, layer integrated gradients, layer conductance), so their metrics read the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COMPLETENESS_WITHIN", "completeness_metrics"]

#: A sample is "within" when its relative error is at most this.
COMPLETENESS_WITHIN = 0.01


def completeness_metrics(attribution_sum: np.ndarray, gap: np.ndarray, kind: str = "exact") -> dict[str, Any]:
    """Metrics of ``sum(attributions)`` against ``gap = f(x) - f(baseline)``, one value per sample.

    Args:
        attribution_sum: ``(N,)`` sum of each sample's attributions (over every input or layer unit).
        gap: ``(N,)`` the difference the attributions should add up to (for GradientShap: ``f(x)`` minus the mean
            of ``f`` over the reference baselines, which the attributions match only in expectation).
        kind: ``"exact"`` (up to the integral's approximation) or ``"expectation"`` (sampled methods).

    Returns:
        ``completeness_median_relative_error``, ``completeness_max_relative_error`` (``|sum - gap| / |gap|``, with
        ``|gap|`` floored at 1e-12), ``completeness_within_1pct`` (share of samples within 1 %), and
        ``completeness`` (``kind``).
    """
    s = np.asarray(attribution_sum, dtype=np.float64).reshape(-1)
    g = np.asarray(gap, dtype=np.float64).reshape(-1)
    rel = np.abs(s - g) / np.maximum(np.abs(g), 1e-12)
    finite = np.isfinite(rel)
    if not finite.any():
        return {"completeness": kind, "completeness_median_relative_error": None,
                "completeness_max_relative_error": None, "completeness_within_1pct": 0.0}
    r = rel[finite]
    return {"completeness": kind,
            "completeness_median_relative_error": float(np.median(r)),
            "completeness_max_relative_error": float(np.max(r)),
            "completeness_within_1pct": float(np.mean(rel <= COMPLETENESS_WITHIN))}
