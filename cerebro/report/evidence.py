"""Where a mean attribution map puts the evidence, whether two methods agree, and where a classifier stands against
its majority-class baseline: the numbers and the one judgement per topic behind the findings, the gallery's
agreement notes and the ``predictions`` flags.

Pure numpy on the maps ``summary.json`` points to (``arrays/<diagnostic>/mean_abs_attribution.npy``); the layout of a
map is read from its shape against the input shape: ``(C, T)`` channel x time signals, ``(1, T)`` time-only layer
maps of signals, ``(C, H, W)`` / ``(1, H, W)`` images, ``(F,)`` features or token positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from cerebro.engine.ranks import spearman

__all__ = ["AGREE", "DISAGREE", "OVERLAP", "BARELY", "common_view", "map_agreement", "agreement_word",
           "judge_agreement", "majority_baseline", "baseline_flag", "time_window", "standouts", "map_evidence"]

#: Rank correlation of two maps (on their common view) at or above which methods are said to agree.
AGREE = 0.5
#: Below this, they are said to disagree (between the two: they partly agree).
DISAGREE = 0.3
#: Two concentrated time windows agree when their intersection is at least this share of their union.
OVERLAP = 0.3
#: A classifier less than this much accuracy above its majority-class baseline only "barely beats" it.
BARELY = 0.05


def _squeeze_leading(m: np.ndarray) -> np.ndarray:
    while m.ndim > 1 and m.shape[0] == 1:
        m = m[0]
    return m


def common_view(a: np.ndarray, b: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``|a|`` and ``|b|`` reduced to the same shape by averaging the leading axes one has and the other lacks
    (a ``(C, T)`` map against a ``(1, T)`` layer map: both become time courses ``(T,)``); None if they do not nest."""
    a, b = _squeeze_leading(np.abs(np.asarray(a, dtype=np.float64))), \
        _squeeze_leading(np.abs(np.asarray(b, dtype=np.float64)))
    if a.shape == b.shape:
        return a, b
    if a.ndim < b.ndim:
        b_, a_ = common_view(b, a) or (None, None)
        return None if a_ is None else (a_, b_)
    if a.shape[a.ndim - b.ndim:] != b.shape:
        return None
    return a.reshape(-1, *b.shape).mean(axis=0), b


def map_agreement(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman rank correlation of ``|a|`` and ``|b|`` on their :func:`common_view`; None when not comparable."""
    view = common_view(a, b)
    return None if view is None else spearman(*view)


def agreement_word(rho: float) -> str:
    """``agree`` (``rho >= AGREE``), ``disagree`` (``rho < DISAGREE``) or ``partly agree``: the one reading of a rank
    correlation, for the mean maps and for each worst sample alike."""
    return "agree" if rho >= AGREE else "disagree" if rho < DISAGREE else "partly agree"


def judge_agreement(mean_rho: Optional[float], overlap: Optional[float],
                    samples: Sequence[tuple[Any, float]] = ()) -> dict[str, Any]:
    """One verdict for one pair of methods from all the evidence there is about it.

    Each piece of evidence says ``agree``, ``partly agree`` or ``disagree``: the rank correlation of the mean maps
    (:func:`agreement_word`), the overlap of their concentrated time windows (``agree`` at or above
    :data:`OVERLAP`, else ``disagree``), and the worst samples (``agree`` or ``disagree`` when every sample's rank
    correlation says so by :func:`agreement_word`, ``partly agree`` otherwise). The verdict is ``agree`` when every
    piece agrees,
    ``disagree`` when every piece disagrees, ``partly agree`` otherwise; so two findings can never state the
    pair both ways.

    Args:
        mean_rho: rank correlation of the two mean maps, None when they are not comparable.
        overlap: intersection over union of their concentrated time windows, None when either has none.
        samples: ``(dataset index, rank correlation)`` of the two maps over each worst sample.

    Returns:
        ``{"verdict", "pieces": [{"evidence": "mean_maps" | "time_windows" | "worst_samples", "says", ...}],
        "split": [indices of the worst samples below DISAGREE], "n_samples"}``; ``verdict`` is None when there is no
        evidence at all.
    """
    pieces: list[dict[str, Any]] = []
    if mean_rho is not None:
        pieces.append({"evidence": "mean_maps", "says": agreement_word(mean_rho), "spearman": mean_rho})
    if overlap is not None:
        pieces.append({"evidence": "time_windows", "says": "agree" if overlap >= OVERLAP else "disagree",
                       "overlap": overlap})
    split = [i for i, rho in samples if rho < DISAGREE]
    if samples:
        each = {agreement_word(rho) for _, rho in samples}
        says = "agree" if each == {"agree"} else "disagree" if each == {"disagree"} else "partly agree"
        pieces.append({"evidence": "worst_samples", "says": says, "n": len(samples), "split": split,
                       "spearman": [rho for _, rho in samples]})
    words = {p["says"] for p in pieces}
    verdict = None if not pieces else "agree" if words == {"agree"} else "disagree" if words == {"disagree"} \
        else "partly agree"
    return {"verdict": verdict, "pieces": pieces, "split": split, "n_samples": len(samples)}


def majority_baseline(accuracy: float, majority_accuracy: float) -> str:
    """Where a classifier stands against always predicting the majority class: ``below``, ``at``, ``barely``
    (less than :data:`BARELY` above) or ``above``; the same verdict for a constant classifier and any other.

    Both accuracies are counts over the same ``n`` samples divided by ``n``: equal counts give bit-identical floats
    and different counts differ by at least ``1 / n``, so comparing them exactly is exact."""
    if accuracy < majority_accuracy:
        return "below"
    if accuracy == majority_accuracy:
        return "at"
    return "barely" if accuracy < majority_accuracy + BARELY else "above"


def baseline_flag(accuracy: float, majority_accuracy: float, majority_class: int) -> Optional[str]:
    """The ``predictions`` flag of a classifier at or below its majority-class baseline (None above it), naming the
    accuracy, the majority-class accuracy and the majority class."""
    verdict = majority_baseline(accuracy, majority_accuracy)
    if verdict not in ("below", "at"):
        return None
    head = "below the majority-class baseline" if verdict == "below" else "no better than the majority-class baseline"
    return (f"{head}: accuracy {accuracy:.3f} vs {majority_accuracy:.3f} for always predicting the majority class "
            f"(class {majority_class})")


def _smooth(p: np.ndarray) -> np.ndarray:
    w = max(1, int(round(p.size / 20)))
    if w == 1:
        return p
    kernel = np.ones(w) / w
    padded = np.pad(p, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def time_window(profile: np.ndarray, sfreq: float | None = None, level: float = 0.25) -> Optional[dict[str, Any]]:
    """The contiguous window around the peak of a time profile (lightly smoothed) where it stays above ``median +
    level * (peak - median)``: ``{start, stop, peak}`` in samples (``stop`` inclusive), the same in seconds when
    ``sfreq`` is known, the share of the profile's mass inside and the window's share of the time axis;
    ``concentrated`` is False when the peak barely stands out (less than 1.5 x the median)."""
    p = np.nan_to_num(np.abs(np.asarray(profile, dtype=np.float64).reshape(-1)))
    if p.size < 2 or not p.any():
        return None
    s = _smooth(p)
    peak = int(np.argmax(s))
    base = float(np.median(s))
    thr = base + level * (float(s[peak]) - base)
    lo = peak
    while lo > 0 and s[lo - 1] >= thr:
        lo -= 1
    hi = peak
    while hi < s.size - 1 and s[hi + 1] >= thr:
        hi += 1
    out: dict[str, Any] = {"start": lo, "stop": hi, "peak": int(np.argmax(p[lo : hi + 1])) + lo,
                           "share": float(p[lo : hi + 1].sum() / p.sum()), "area": (hi - lo + 1) / p.size,
                           "concentrated": bool(s[peak] >= 1.5 * base)}
    if sfreq:
        out.update(start_s=lo / sfreq, stop_s=(hi + 1) / sfreq, peak_s=out["peak"] / sfreq)
    return out


def standouts(importance: np.ndarray, limit: int = 5, level: float = 0.5) -> list[int]:
    """Indices (largest first) whose importance is above ``median + level * (max - median)``, at most ``limit``;
    empty when nothing stands out (max below 1.3 x the median) or more than half of them would."""
    imp = np.nan_to_num(np.asarray(importance, dtype=np.float64).reshape(-1))
    if imp.size == 0 or imp.max() <= 0:
        return []
    base = float(np.median(imp))
    if imp.size > 2 and imp.max() < 1.3 * base:
        return []
    above = [int(i) for i in np.argsort(-imp, kind="stable") if imp[i] >= base + level * (imp.max() - base)]
    if imp.size > 2 and len(above) > imp.size / 2:
        return []
    return above[:limit]


def _names(names: Optional[Sequence[str]], idx: Sequence[int]) -> list[str]:
    return [str(names[i]) if names is not None and i < len(names) else str(i) for i in idx]


def map_evidence(mean_map: np.ndarray, input_shape: Sequence[int], sfreq: float | None = None,
                 channel_names: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Where a mean |attribution| map is large: ``{"layout", "channels": [...], "channel_share", "window": ...,
    "region": ..., "features": [...]}`` (only the keys that apply to the map's layout)."""
    m = np.abs(np.nan_to_num(np.asarray(mean_map, dtype=np.float64)))
    shape = tuple(int(s) for s in input_shape)
    out: dict[str, Any] = {"layout": "other"}
    if len(shape) == 2 and m.shape[-1] == shape[1] and m.size in (shape[0] * shape[1], shape[1]):
        full = m.size == shape[0] * shape[1]
        m2 = m.reshape(shape) if full else m.reshape(1, shape[1])
        out["layout"] = "channel_time" if full else "time"
        if full:
            chan = m2.mean(axis=1)
            top = standouts(chan)
            out["channel_indices"] = top
            out["channels"] = _names(channel_names, top)
            out["channel_share"] = float(chan[top].sum() / chan.sum()) if top and chan.sum() > 0 else None
            out["channel_area"] = len(top) / chan.size
        out["window"] = time_window(m2.mean(axis=0), sfreq)
    elif len(shape) == 3 and m.shape[-2:] == tuple(shape[-2:]):
        spatial = m.reshape(-1, *shape[-2:]).mean(axis=0)
        out["layout"] = "image"
        thr = float(np.median(spatial)) + 0.5 * (float(spatial.max()) - float(np.median(spatial)))
        rows, cols = np.nonzero(spatial >= thr)
        if rows.size and spatial.max() > 0:
            out["region"] = {"rows": [int(rows.min()), int(rows.max())], "cols": [int(cols.min()), int(cols.max())],
                             "share": float(spatial[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].sum()
                                            / spatial.sum()),
                             "area": float((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                                           / spatial.size)}
    elif m.ndim == 1 or len(shape) == 1:
        flat = m.reshape(-1)
        top = standouts(flat)
        out["layout"] = "features"
        out["feature_indices"] = top
        out["feature_share"] = float(flat[top].sum() / flat.sum()) if top and flat.sum() > 0 else None
    return out
