"""Levels of the deletion/insertion curves and their areas (RISE, Petsiuk, Das & Saenko, BMVC 2018, arXiv:1806.07421).

A curve is sampled at ``steps`` levels: the number of units perturbed, from 0 (the input itself) to all of them (the
reference). Where a faithful map differs from random order is the start of the curve (its first units carry the
evidence), so the default spacing is denser there. Each area is a trapezoid sum over the *fraction of units
perturbed* (the true, non-uniform x of every level), so it estimates the same integral on ``[0, 1]`` whatever the
spacing or the number of levels, and a method and random order, sampled at the same levels, compare directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cerebro.errors import CerebroConfigError

__all__ = ["SPACINGS", "unit_counts", "curve_area", "curve_scores"]

#: ``quadratic``: fraction ``(k / (steps - 1))^2`` (level gaps grow linearly: dense at the start, the tail still
#: resolved); ``geometric``: from one unit to all of them by a constant ratio (densest start, coarse tail);
#: ``uniform``: evenly spaced (the spacing of RISE's plots).
SPACINGS = ("quadratic", "geometric", "uniform")


def unit_counts(n_units: int, steps: int, spacing: str = "quadratic") -> list[int]:
    """Units perturbed at each level: strictly increasing from 0 to ``n_units``, ``min(steps, n_units + 1)`` levels.

    Rounded to whole units; a level that would repeat the one before takes the next unit instead (never a wasted pass).
    """
    if steps < 2:
        raise CerebroConfigError(f"`faithfulness.steps` must be >= 2 (the unperturbed and the fully replaced input), "
                                 f"got {steps}")
    if spacing not in SPACINGS:
        raise CerebroConfigError(f"`faithfulness.spacing` can be {list(SPACINGS)}, got {spacing!r}")
    levels = min(steps, n_units + 1)
    last = levels - 1
    if spacing == "uniform":
        wanted = [k * n_units / last for k in range(levels)]
    elif spacing == "quadratic":
        wanted = [n_units * (k / last) ** 2 for k in range(levels)]
    else:
        wanted = [0.0] + [n_units ** ((k - 1) / max(1, last - 1)) for k in range(1, levels)]
    counts = [0]
    for k in range(1, last):
        # at least one unit more than the level before, and room left for one unit per level still to come
        counts.append(min(n_units - (last - k), max(counts[-1] + 1, math.floor(wanted[k] + 0.5))))
    return counts + [n_units]


def curve_area(curves: Tensor, counts: Sequence[int], n_units: int) -> Tensor:
    """Area under each curve ``(..., levels)`` over the fraction of units perturbed (trapezoids on ``[0, 1]``)."""
    frac = torch.tensor([c / n_units for c in counts], dtype=torch.float64)
    return torch.trapezoid(curves.double(), frac, dim=-1)


def curve_scores(names: Sequence[str], dele: dict[str, np.ndarray], ins: dict[str, np.ndarray],
                 rand_area: dict[str, np.ndarray], counts: Sequence[int], n_units: int
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """AUCs and the faithfulness score of each method from its curves ``(N, levels)`` and the random-order ones.

    ``rand_area`` holds the per-sample mean area of the random orders (``deletion``, ``insertion``). AUCs are
    fractions of the unperturbed score when every unperturbed score is positive, else in the score's own units.
    ``score`` is the area gained over random order on both curves, in units of twice the curves' mean range:
    0 = random order, 1 = ideal, negative = worse than random. Returns ``(per-method results, run metrics)``.
    """
    full, empty = dele["random"][:, 0], dele["random"][:, -1]
    fraction = bool(np.all(full > 0))
    scale = full if fraction else np.ones_like(full)
    meta = {"auc_scale": "fraction of the unperturbed score" if fraction else "the score's own units",
            "unperturbed_score_mean": float(full.mean()), "replaced_score_mean": float(empty.mean())}
    rd_raw, ri_raw = rand_area["deletion"], rand_area["insertion"]
    results: dict[str, dict[str, Any]] = {}
    for m in names:
        d_raw = curve_area(torch.from_numpy(dele[m]), counts, n_units).numpy()
        i_raw = curve_area(torch.from_numpy(ins[m]), counts, n_units).numpy()
        per_sample = (rd_raw - d_raw) + (i_raw - ri_raw)
        # The area between two curves is at most the range of the values they take: with both curves' range as
        # the unit, the score lies in [-1, 1] whatever the score's own scale (0 = random order).
        seen = np.concatenate([dele[m], ins[m], dele["random"], ins["random"]], 1)
        norm = 2 * float(np.ptp(seen, 1).mean())
        ok = norm > 1e-12 * max(1.0, float(np.abs(full).mean()))
        score = float(per_sample.mean() / norm) if ok else None
        stderr = float(per_sample.std(ddof=1) / math.sqrt(len(per_sample)) / norm) if ok and len(per_sample) > 1 \
            else (0.0 if ok else None)
        results[m] = {"deletion_auc": float((d_raw / scale).mean()), "insertion_auc": float((i_raw / scale).mean()),
                      "random_deletion_auc": float((rd_raw / scale).mean()),
                      "random_insertion_auc": float((ri_raw / scale).mean()),
                      "score": score, "score_stderr": stderr,
                      "deletion_gain": float(((rd_raw - d_raw) / scale).mean()),
                      "insertion_gain": float(((i_raw - ri_raw) / scale).mean())}
    return results, meta
