"""Deletion/insertion curves under a :class:`~cerebro.engine.precision.PrecisionPlan` (``faithfulness.precision``).

The curves are forward passes only, so reduced precision has no float32 correction to pay for: the first block runs in
float32 (kept) and in the reduced precision, and ``auto`` keeps the reduced precision for the rest of the run only if
its passes are at least :data:`~cerebro.engine.precision.MIN_SPEEDUP` faster and every AUC the report would print from
that block (each method's deletion and insertion AUC, and random order's) is within the tolerance of float32's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.curve_levels import curve_area, curve_scores
from cerebro.engine.perturbation import Units, perturbation_curves
from cerebro.engine.precision import PrecisionPlan, autocast_for

__all__ = ["block_curves", "planned_curves", "auc_difference"]


def block_curves(names: Sequence[str], d: Tensor, i: Tensor, counts: Sequence[int], units: Units
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Deletion and insertion curves of one block per method (the random orders averaged), and the random orders'
    mean area per sample: what :func:`~cerebro.engine.curve_levels.curve_scores` reads."""
    k = len(names)
    dele = {m: d[j].numpy() for j, m in enumerate(names)}
    ins = {m: i[j].numpy() for j, m in enumerate(names)}
    dele["random"], ins["random"] = d[k:].mean(0).numpy(), i[k:].mean(0).numpy()
    area = {"deletion": curve_area(d[k:], counts, units.n).mean(0).numpy(),
            "insertion": curve_area(i[k:], counts, units.n).mean(0).numpy()}
    return dele, ins, area


def auc_difference(names: Sequence[str], a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor], counts: Sequence[int],
                   units: Units) -> float:
    """Largest difference between the AUCs the report prints (each method's and random order's, deletion and
    insertion) computed from the curves ``a`` and ``b`` of the same block."""
    ra, _ = curve_scores(names, *block_curves(names, *a, counts, units), counts, units.n)
    rb, _ = curve_scores(names, *block_curves(names, *b, counts, units), counts, units.n)
    keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
    diff = [abs(ra[m][key] - rb[m][key]) for m in names for key in keys]
    return float(np.nan_to_num(max(diff), nan=np.inf))


def planned_curves(plan: PrecisionPlan, tolerance: float, names: Sequence[str],
                   score: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, reference: Tensor,
                   index: Tensor | None, orders: Sequence[Tensor], units: Units, counts: Sequence[int],
                   policy: ChunkPolicy, check: Callable[[], None]) -> tuple[Tensor, Tensor]:
    """:func:`~cerebro.engine.perturbation.perturbation_curves` of one block in the plan's precision; the first block
    of a plan with a reduced candidate runs in both (its float32 curves are returned) and the plan is judged on it."""
    b = x.shape[0]
    inner = sum(1 for c in counts if 0 < c < units.n)
    points = b * (2 * len(orders) * inner + 2)

    def run(dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
        with autocast_for(x.device, dtype):
            return perturbation_curves(score, x, reference, index, orders, units, counts, policy, check)

    if plan.dtype is None or plan.measured:
        return plan.planned(b, points, run)

    def warm_up(dtype: torch.dtype | None) -> None:  # one sample's score (kernel selection)
        with torch.no_grad(), autocast_for(x.device, dtype):
            score(x[:1], None if index is None else index[:1])
    c32, cred, t32, tred = plan.side_by_side(b, points, run, warm_up)
    plan.error_key = "auc_error_vs_fp32"
    plan.judge_maps(t32, tred, auc_difference(names, c32, cred, counts, units), tolerance, measure="AUCs",
                    scale="absolute, on the AUC scale of the report")
    return c32
