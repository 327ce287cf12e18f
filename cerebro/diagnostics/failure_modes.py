"""``failure_modes``: where the model fails: worst samples, error by target range, bias, and error per group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.context import AutopsyContext
from cerebro.errors import DiagnosticSkipped
from cerebro.registry import register_diagnostic
from cerebro.report.figures import bar
from cerebro.report.writer import DiagnosticOutput

__all__ = ["FailureModes"]


@dataclass
class FailureModesOptions:
    #: How many worst samples to list.
    top_k: int = field(default=10, metadata={"min": 1})
    #: Number of target quantile bins (regression).
    n_bins: int = field(default=5, metadata={"min": 1})
    #: Metadata fields with at most this many distinct values are analysed per group.
    max_groups: int = field(default=50, metadata={"min": 1})


def _group_errors(values: list[Any], err: np.ndarray, max_groups: int) -> dict[str, dict[str, float]] | None:
    keys = [str(v) for v in values]
    uniq = sorted(set(keys))
    if len(uniq) > max_groups or len(uniq) < 2:
        return None
    arr = np.array(keys)
    return {u: {"n": int((arr == u).sum()), "mean_error": float(err[arr == u].mean())} for u in uniq}


@register_diagnostic("failure_modes")
class FailureModes(Diagnostic):
    """Worst-k samples by absolute error (regression) or loss (classification), error by target quantile bin or
    class, over- vs under-prediction, and error per metadata group (e.g. subject)."""

    Options = FailureModesOptions
    requires_labels = True

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        if not ctx.target.supervised:
            raise DiagnosticSkipped(f"failure modes compare predictions with labels; target {ctx.target.kind} "
                                    "makes no predictions")
        y = ctx.labels().numpy()
        pred = ctx.predictions().numpy()
        if ctx.target.kind == "classification":
            err = ctx.target.per_sample_loss(ctx.outputs, ctx.samples.y).numpy().astype(np.float64)
            err_name = "loss"
        else:
            y = y.astype(np.float64)
            err = np.abs(pred.astype(np.float64) - y)
            err_name = "abs_error"
        out.array("errors", err)
        out.array("indices", ctx.samples.indices)
        k = min(self.options.top_k, len(err))
        worst = np.argsort(-err, kind="stable")[:k]
        out.metric("worst", [
            {"index": int(ctx.samples.indices[i]), err_name: float(err[i]), "prediction": pred[i].item(),
             "target": y[i].item(), "metadata": {m: v[i] for m, v in ctx.samples.metadata.items()}}
            for i in worst
        ])
        out.metric(f"mean_{err_name}", float(err.mean()))
        if ctx.target.kind == "classification":
            classes = np.unique(y)
            by_class = {int(c): float(np.mean(pred[y == c] != c)) for c in classes}
            out.metric("error_rate_by_class", by_class)
            out.figure(bar([str(c) for c in by_class], list(by_class.values()), "error rate by true class",
                           "error rate"), "by_class")
        else:
            signed = pred.astype(np.float64) - y
            out.metric("over_prediction_fraction", float(np.mean(signed > 0)))
            out.metric("mean_signed_error", float(signed.mean()))
            edges = np.unique(np.quantile(y, np.linspace(0, 1, self.options.n_bins + 1)))
            bins = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, max(len(edges) - 2, 0))
            by_bin = []
            for b in range(max(len(edges) - 1, 1)):
                mask = bins == b
                if mask.any():
                    by_bin.append({"low": float(edges[b]), "high": float(edges[min(b + 1, len(edges) - 1)]),
                                   "n": int(mask.sum()), "mean_abs_error": float(err[mask].mean()),
                                   "mean_signed_error": float(signed[mask].mean())})
            out.metric("by_target_bin", by_bin)
            out.figure(bar([f"{d['low']:.3g}..{d['high']:.3g}" for d in by_bin], [d["mean_abs_error"] for d in by_bin],
                           "mean absolute error by target quantile bin", "MAE"), "by_bin")
            if len(by_bin) >= 2:
                worst_bin = max(by_bin, key=lambda d: d["mean_abs_error"])
                if worst_bin["mean_abs_error"] > 2 * float(err.mean()):
                    out.flag(f"errors concentrate in targets {worst_bin['low']:.3g}..{worst_bin['high']:.3g} "
                             f"(MAE {worst_bin['mean_abs_error']:.3g} vs {float(err.mean()):.3g} overall)")
        groups = {}
        for m, values in ctx.samples.metadata.items():
            g = _group_errors(values, err, self.options.max_groups)
            if g is not None:
                groups[m] = g
                out.figure(bar(list(g), [d["mean_error"] for d in g.values()], f"mean {err_name} by {m}", err_name),
                           f"by_{m}")
        if groups:
            out.metric("by_group", groups)
        fig_vals = err[worst]
        out.figure(bar([str(int(ctx.samples.indices[i])) for i in worst], fig_vals, f"worst {k} samples", err_name),
                   "worst")
