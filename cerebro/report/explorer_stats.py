"""Per-sample numbers of the report's sample explorer, read back from the arrays the diagnostics stored: each
method's faithfulness on each sample and each integrated-gradients method's convergence on each sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["faithfulness_per_sample", "convergence_per_sample", "table_columns", "DEFAULT_TOLERANCE"]

#: Relative completeness tolerance of a method whose configuration names none (integrated_gradients' default).
DEFAULT_TOLERANCE = 0.01


def _area(curves: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Area under each row's curve over the fraction of the input perturbed (trapezoids)."""
    c = np.asarray(curves, dtype=np.float64)
    return ((c[:, 1:] + c[:, :-1]) / 2 * np.diff(fraction)).sum(axis=1)


def faithfulness_per_sample(root: Path, n: int) -> dict[str, list[float | None]]:
    """``{method: score per sample}`` from ``arrays/faithfulness``: the deletion and insertion gain of the method's
    order over the random order, in units of twice the range of that sample's curves, so each score lies in
    [-1, 1] and 0 is random order (the ``faithfulness`` diagnostic's score, sample by sample). Empty when
    faithfulness stored no curves for these ``n`` samples."""
    folder = root / "arrays" / "faithfulness"
    needed = [folder / f"{k}.npy" for k in ("fraction_perturbed", "random_deletion", "random_insertion")]
    if not all(p.exists() for p in needed):
        return {}
    frac = np.load(needed[0]).astype(np.float64).reshape(-1)
    rd, ri = np.load(needed[1]), np.load(needed[2])
    if rd.shape[0] != n or ri.shape[0] != n or rd.shape[1] != frac.size:
        return {}
    out = {}
    for path in sorted(folder.glob("*_deletion.npy")):
        m = path.name[: -len("_deletion.npy")]
        ins = folder / f"{m}_insertion.npy"
        if m == "random" or not ins.exists():
            continue
        d, i = np.load(path), np.load(ins)
        if d.shape != rd.shape or i.shape != ri.shape:
            continue
        gain = (_area(rd, frac) - _area(d, frac)) + (_area(i, frac) - _area(ri, frac))
        norm = 2 * np.ptp(np.concatenate([d, i, rd, ri], axis=1).astype(np.float64), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(norm > 1e-12, gain / norm, np.nan)
        out[m] = [round(float(s), 4) if np.isfinite(s) else None for s in score]
    return out


def _tolerance(summary: dict[str, Any], method: str) -> float:
    for entry in summary.get("config") or []:
        if isinstance(entry, dict) and method in entry and isinstance(entry[method], dict):
            tol = entry[method].get("delta_tolerance")
            if isinstance(tol, (int, float)) and not isinstance(tol, bool):
                return float(tol)
    return DEFAULT_TOLERANCE


def convergence_per_sample(summary: dict[str, Any], root: Path, n: int, methods: list[str]) -> dict[str, dict]:
    """``{method: {relative, converged, tolerance, map_converged}}`` for each method that stored
    ``convergence_delta.npy`` and ``gap.npy`` (integrated gradients and its relatives): ``|delta| / |f(x) -
    f(baseline)|`` per sample, whether it is within the method's ``delta_tolerance`` (or ``|delta|`` is below 1e-6,
    as the diagnostic counts it), and whether its map's estimated error met ``map_tolerance`` (``converged.npy``)."""
    out = {}
    for m in methods:
        d, g = root / "arrays" / m / "convergence_delta.npy", root / "arrays" / m / "gap.npy"
        if not (d.exists() and g.exists()):
            continue
        delta, gap = np.load(d).astype(np.float64).reshape(-1), np.load(g).astype(np.float64).reshape(-1)
        if delta.size != n or gap.size != n:
            continue
        rel = np.abs(delta) / np.maximum(np.abs(gap), 1e-12)
        tol = _tolerance(summary, m)
        ok = (rel <= tol) | (np.abs(delta) <= 1e-6)
        conv = root / "arrays" / m / "converged.npy"  # both stop criteria (completeness and the map's error)
        both = np.load(conv).astype(bool).reshape(-1) if conv.exists() else None
        if both is None or both.size != n:  # not stored (fixed steps, Captum's rules) or of another run
            both = np.ones(n, dtype=bool)
        out[m] = {"relative": [float(f"{r:.3g}") if np.isfinite(r) else None for r in rel],
                  "converged": [bool(o) for o in ok], "tolerance": tol, "map_converged": [bool(o) for o in both]}
    return out


def table_columns(meta: list[str], faith: list[str], conv: list[str], error_name: str) -> list[dict[str, str]]:
    """The explorer table's columns, in the order of each row's values."""
    cols = [{"key": "position", "label": "#", "group": "id"}, {"key": "index", "label": "index", "group": "id"},
            {"key": "target", "label": "target", "group": "label"},
            {"key": "prediction", "label": "prediction", "group": "label"},
            {"key": "error", "label": "error (prediction - target)" if error_name == "error" else error_name,
             "group": "error"}]
    cols += [{"key": f"meta:{k}", "label": k, "group": "meta"} for k in meta]
    cols += [{"key": f"faith:{m}", "label": f"{m} faithfulness", "group": "faith"} for m in faith]
    cols += [{"key": f"conv:{m}", "label": f"{m} |delta| / |gap|", "group": "conv"} for m in conv]
    return cols
