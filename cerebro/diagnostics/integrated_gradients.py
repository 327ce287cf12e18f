"""``integrated_gradients``: Integrated Gradients on the target scalars, batched near the hardware floor.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017 (arXiv:1703.01365).
By default the integral uses cerebro's nested rule with per-sample adaptive levels (every sample reaches
``|delta| <= delta_tolerance * |f(x) - f(baseline)|`` or is flagged); a fixed ``n_steps`` with one of Captum's rules
reproduces ``captum.attr.IntegratedGradients``. See :mod:`cerebro.engine.integrated` for the rules and batching and
:mod:`cerebro.engine.precision` for ``precision``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.baselines import chunk_baseline, input_baseline, make_baseline
from cerebro.engine.budget import points_per_pass
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.completeness import completeness_metrics
from cerebro.engine.context import AutopsyContext
from cerebro.engine.integrated import (MAP_TOLERANCE, NESTED, START_STEPS, check_steps, integrated_gradients,
                                       rule_for)
from cerebro.engine.precision import PRECISIONS, PrecisionPlan, plan_for, precision_option, record_precision
from cerebro.errors import choice_error
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["IntegratedGradients", "make_baseline", "AUTOCAST"]

_CAPTUM = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")
_METHODS = ("auto", NESTED, *_CAPTUM)
_BASELINES = ("zeros", "mean")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class IntegratedGradientsOptions:
    #: auto: per sample, until |delta| <= delta_tolerance * |f(x) - f(baseline)|; or a fixed number of steps.
    n_steps: Any = "auto"
    #: zeros | mean (the sample set's mean input) | a path to a .npy/.pt file of shape input or (N, *input).
    baseline: str = field(default="zeros", metadata={"choices": _BASELINES, "path_ok": True})
    #: auto (nested with n_steps auto, gausslegendre with a fixed n_steps) | nested | one of Captum's rules.
    method: str = field(default="auto", metadata={"choices": _METHODS})
    #: Interpolation points per forward+backward pass; null = calibrated within the memory budget.
    internal_batch_size: Optional[int] = field(default=None, metadata={"min": 1})
    #: Samples whose |delta| exceeds this fraction of |f(x) - f(baseline)| are flagged (and refined with auto).
    delta_tolerance: float = field(default=0.01, metadata={"min": 0.0})
    #: nested auto: a sample also needs its map's estimated error (relative L2: the change between its last two
    #: levels scaled by the observed convergence ratio) within this.
    map_tolerance: float = field(default=MAP_TOLERANCE, metadata={"min": 0.0})
    #: Most steps n_steps=auto may use per sample.
    max_steps: int = field(default=512, metadata={"min": 2})
    #: auto | fp32 | bf16 | fp16: precision inside the model for the attribution passes (endpoints and sums fp32);
    #: reduced precision runs the bulk of the points, fp32 corrects them and finishes every sample that misses.
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    #: with bf16/fp16, a sample whose map's rounding floor (relative L2, measured against fp32) exceeds this is
    #: finished in fp32.
    precision_tolerance: float = field(default=0.02, metadata={"min": 0.0})
    #: Deprecated: use precision (bf16 | fp16 map to it).
    autocast: Optional[str] = field(default=None, metadata={"choices": (None, *AUTOCAST)})


@register_diagnostic("integrated_gradients")
class IntegratedGradients(AttributionDiagnostic):
    """Integrated Gradients for every sample, with per-sample convergence deltas; adaptive steps by default."""

    Options = IntegratedGradientsOptions

    def validate(self) -> None:
        o = self.options
        check_steps("integrated_gradients", o.n_steps, o.method)
        if o.autocast not in (None, *AUTOCAST):
            raise choice_error("integrated_gradients.autocast", o.autocast, [None, *AUTOCAST])
        o.precision = precision_option("integrated_gradients", o.precision, o.autocast)

    @property
    def rule(self) -> str:
        """The integration rule that runs."""
        return rule_for(self.options.method, self.options.n_steps)

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        o = self.options
        limit = o.internal_batch_size or points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        plan = plan_for(o.precision, self.rule == NESTED, ctx.device)
        if o.autocast is not None:
            out.flag(f"autocast: {o.autocast} is deprecated; ran as precision: {o.autocast}")
        return {"baseline": input_baseline(ctx, o.baseline, self.name), "limit": limit, "policies": {}, "plan": plan}

    def _policy(self, ctx: AutopsyContext, state: dict[str, Any], dtype: torch.dtype | None) -> ChunkPolicy:
        used = str(dtype or torch.float32).replace("torch.", "")
        if used not in state["policies"]:
            key = (type(ctx.model).__qualname__, tuple(ctx.samples.input_shape), str(ctx.device), used)
            state["policies"][used] = ChunkPolicy(state["limit"], key, ctx.device,
                                                  fixed=self.options.internal_batch_size)
        return state["policies"][used]

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        o, baseline = self.options, state["baseline"]
        block = max(ctx.batch_size, 64)
        n_steps = None if o.n_steps == "auto" else o.n_steps
        for start in range(samples.start, samples.stop, block):
            sl = slice(start, min(start + block, samples.stop))
            x = ctx.grad_x(sl)  # on token ids: their embeddings, attributed through ctx.grad_forward
            base = chunk_baseline(baseline, x, sl)
            index = ctx.grad_index(sl)
            forward = ctx.grad_forward
            plan: PrecisionPlan = state["plan"]
            res = integrated_gradients(forward, x, base, index, n_steps, self.rule,
                                       lambda d: self._policy(ctx, state, d), tolerance=o.delta_tolerance,
                                       max_steps=o.max_steps, map_tolerance=o.map_tolerance, plan=plan,
                                       precision_tolerance=o.precision_tolerance)
            change = res.map_change if res.map_change is not None else torch.full_like(res.gap, float("nan"))
            converged = res.converged if res.converged is not None else torch.ones_like(res.gap, dtype=torch.bool)
            maps = {k: v.cpu().numpy() for k, v in ctx.input_maps(res.attributions).items()}
            yield sl.start, {**maps,
                             "convergence_delta": res.delta.double().cpu().numpy(),
                             "gap": res.gap.double().cpu().numpy(), "steps": res.steps.cpu().numpy(),
                             "map_change": change.double().cpu().numpy(), "converged": converged.cpu().numpy()}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        o = self.options
        deltas, gaps, steps = arrays["convergence_delta"], arrays["gap"], arrays["steps"]
        out.array("convergence_delta", deltas)
        out.array("steps", steps)
        out.array("gap", gaps)
        if "attributions_per_dimension" in arrays:  # token ids with tokens.per_dimension: (N, T, D)
            out.array("attributions_per_dimension", arrays["attributions_per_dimension"])
        rel = np.abs(deltas) / np.maximum(np.abs(gaps), 1e-12)
        adaptive = o.n_steps == "auto"
        out.metric("n_steps", o.n_steps)
        out.metric("steps_max", int(steps.max()))
        out.metric("steps_mean", float(steps.mean()))
        out.metric("evaluations", int(_evaluations(steps, adaptive, o.n_steps, self.rule)))
        out.metric("method", self.rule)
        record_precision(out, state["plan"])
        for used, policy in state["policies"].items():
            for k, v in policy.describe().items():
                out.metric(k, v)
        out.metric("mean_abs_delta", float(np.mean(np.abs(deltas))))
        out.metric("max_abs_delta", float(np.max(np.abs(deltas))))
        out.metric("median_relative_delta", float(np.median(rel)))
        for key, value in completeness_metrics(deltas + gaps, gaps).items():  # sum(attr) = delta + gap
            out.metric(key, value)
        out.metric("max_relative_delta", float(np.max(rel)))
        incomplete = (rel > o.delta_tolerance) & (np.abs(deltas) > 1e-6)
        if self.rule == NESTED and adaptive:
            change = arrays["map_change"]
            out.array("map_change", change)
            out.metric("max_map_change", float(np.nanmax(change)) if np.isfinite(change).any() else None)
            # complete, but the map's estimated error still above map_tolerance when max_steps ran out
            moving = int(np.sum(~arrays["converged"].astype(bool) & ~incomplete))
            out.array("converged", arrays["converged"].astype(bool))
            out.metric("map_not_converged", moving)
            if moving:
                out.flag(f"IG map not converged on {moving}/{ctx.n} samples (estimated error above "
                         f"map_tolerance={o.map_tolerance:.0%} at max_steps={o.max_steps}, completeness within "
                         f"tolerance): raise max_steps")
        bad = int(np.sum(incomplete))
        out.metric("not_converged", bad)
        if bad:
            hint = f"still above tolerance at max_steps={o.max_steps}" if adaptive else "raise n_steps or use auto"
            out.flag(f"IG not converged on {bad}/{ctx.n} samples (|delta| > {o.delta_tolerance:.0%} of "
                     f"|f(x) - f(baseline)|): {hint}")
        for reason in stats.reasons():
            out.flag(reason)
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs, tuple(ctx.samples.input_shape), "integrated gradients")


def _evaluations(steps: np.ndarray, adaptive: bool, n_steps: Any, rule: str) -> int:
    """Forward+backward evaluations. Nested levels reuse every earlier point (a sample costs its final step count);
    adaptive Captum rules recompute every level they went through (16, 32, ... final)."""
    if not adaptive:
        return int(steps.size * n_steps)
    if rule == NESTED:
        return int(steps.sum())
    return int(sum(2 * int(s) - START_STEPS for s in steps))
