"""``integrated_gradients``: Captum's Integrated Gradients on the target scalars, batched under a memory budget.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017 (arXiv:1703.01365).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import Tensor

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.attribution import degenerate_reasons, summarize_maps
from cerebro.engine.budget import points_per_pass
from cerebro.engine.context import AutopsyContext
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["IntegratedGradients", "make_baseline"]

_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")
_BASELINES = ("zeros", "mean")


@dataclass
class IntegratedGradientsOptions:
    #: Integration steps per sample (Captum's n_steps).
    n_steps: int = field(default=50, metadata={"min": 1})
    #: zeros | mean (the sample set's mean input) | a path to a .npy/.pt file of shape input or (N, *input).
    baseline: str = field(default="zeros", metadata={"choices": _BASELINES, "path_ok": True})
    #: Captum's integration rule.
    method: str = field(default="gausslegendre", metadata={"choices": _METHODS})
    #: Interpolation points per forward+backward pass; null derives it from the memory budget.
    internal_batch_size: Optional[int] = field(default=None, metadata={"min": 1})
    #: Samples whose |delta| exceeds this fraction of |f(x) - f(baseline)| are flagged as not converged.
    delta_tolerance: float = field(default=0.05, metadata={"min": 0.0})


def make_baseline(spec: str, x: Tensor) -> Tensor:
    """Baseline tensor of shape ``x.shape[1:]`` or ``x.shape``."""
    if spec == "zeros":
        return torch.zeros_like(x[:1])
    if spec == "mean":
        return x.mean(dim=0, keepdim=True)
    if not os.path.isfile(spec):
        raise CerebroConfigError(f"integrated_gradients.baseline {spec!r} is neither zeros|mean nor an existing file")
    data = np.load(spec) if spec.endswith(".npy") else torch.load(spec, map_location="cpu", weights_only=True)
    base = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data, dtype=x.dtype)
    if tuple(base.shape) == tuple(x.shape[1:]):
        return base.unsqueeze(0)
    if tuple(base.shape) == tuple(x.shape):
        return base
    raise CerebroConfigError(
        f"baseline file {spec!r} has shape {tuple(base.shape)}; expected the input shape {tuple(x.shape[1:])} "
        f"or one per sample {tuple(x.shape)}"
    )


@register_diagnostic("integrated_gradients")
class IntegratedGradients(Diagnostic):
    """Integrated Gradients for every sample, one Captum call per chunk of samples, with convergence deltas."""

    Options = IntegratedGradientsOptions

    def validate(self) -> None:
        if self.options.method.startswith("riemann") and self.options.n_steps < 2:
            raise CerebroConfigError(
                f"`integrated_gradients.n_steps` must be >= 2 with method {self.options.method!r} (Captum's Riemann "
                f"rules need two points), got {self.options.n_steps}"
            )

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        o = self.options
        x_all = ctx.samples.x
        baseline = make_baseline(o.baseline, x_all)
        points = o.internal_batch_size or points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        per_call = max(1, min(ctx.batch_size, points // o.n_steps))
        ig = CaptumIG(ctx.forward, multiply_by_inputs=True)
        attrs = out.open_array("attributions", (ctx.n, *x_all.shape[1:]))
        deltas = np.zeros(ctx.n)
        gaps = np.zeros(ctx.n)
        for sl in ctx.chunks(per_call):
            x = ctx.x(sl)
            b = (baseline if baseline.shape[0] == 1 else baseline[sl]).to(ctx.device).expand_as(x).contiguous()
            args = ctx.forward_args(sl)
            a, delta = ig.attribute(x, baselines=b, additional_forward_args=args, n_steps=o.n_steps, method=o.method,
                                    internal_batch_size=min(points, x.shape[0] * o.n_steps),
                                    return_convergence_delta=True)
            with torch.no_grad():
                fx = ctx.forward(x, *(args or ()))
                fb = ctx.forward(b, *(args or ()))
            attrs[sl] = a.detach().float().cpu().numpy()
            deltas[sl] = delta.detach().double().cpu().numpy()
            gaps[sl] = (fx - fb).detach().double().cpu().numpy()
        attrs.flush()
        out.array("indices", ctx.samples.indices)
        out.array("convergence_delta", deltas)
        rel = np.abs(deltas) / np.maximum(np.abs(gaps), 1e-12)
        out.metric("n_steps", o.n_steps)
        out.metric("method", o.method)
        out.metric("samples_per_call", per_call)
        out.metric("mean_abs_delta", float(np.mean(np.abs(deltas))))
        out.metric("max_abs_delta", float(np.max(np.abs(deltas))))
        out.metric("median_relative_delta", float(np.median(rel)))
        bad = int(np.sum((rel > o.delta_tolerance) & (np.abs(deltas) > 1e-6)))
        out.metric("not_converged", bad)
        if bad:
            out.flag(f"IG not converged on {bad}/{ctx.n} samples (|delta| > {o.delta_tolerance:.0%} of "
                     f"|f(x) - f(baseline)|): raise n_steps")
        for reason in degenerate_reasons(np.asarray(attrs)):
            out.flag(reason)
        mean_abs = np.zeros(x_all.shape[1:], dtype=np.float64)
        for sl in ctx.chunks(1024):
            mean_abs += np.abs(np.asarray(attrs[sl], dtype=np.float64)).sum(axis=0)
        mean_abs /= ctx.n
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs, tuple(x_all.shape[1:]), "integrated gradients")
