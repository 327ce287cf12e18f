"""Rank correlation shared by the sanity checks and ``compare``: Spearman with average ranks for ties."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["average_ranks", "pearson", "spearman", "mean_abs_spearman"]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties given their average rank (as ``scipy.stats.rankdata``)."""
    n = x.size
    order = np.argsort(x, kind="mergesort")
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.arange(n)
    s = x[order]
    new = np.r_[True, s[1:] != s[:-1]]
    dense = np.cumsum(new)[inverse]
    bounds = np.r_[np.nonzero(new)[0], n]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def pearson(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return min(1.0, max(-1.0, float(a @ b) / denom)) if denom > 0 else None


def spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman rank correlation of two same-size arrays (flattened); None when undefined (constant or non-finite)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return pearson(average_ranks(a), average_ranks(b))


def mean_abs_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples (first axis) of the Spearman correlation of ``|a|`` and ``|b|``; an undefined sample
    (a constant map) counts as 0, i.e. as no evidence that the maps agree."""
    rhos = [spearman(np.abs(x), np.abs(y)) for x, y in zip(a, b)]
    return float(np.mean([0.0 if r is None else r for r in rhos]))
