"""``integrated_gradients``: Integrated Gradients on the target scalars, batched near the hardware floor.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017 (arXiv:1703.01365).
The integral uses Captum's approximation rules; see :mod:`cerebro.engine.integrated` for the batching.
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
from cerebro.engine.integrated import START_STEPS, integrated_gradients
from cerebro.errors import CerebroConfigError, choice_error
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["IntegratedGradients", "make_baseline", "AUTOCAST"]

_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")
_BASELINES = ("zeros", "mean")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class IntegratedGradientsOptions:
    #: Integration steps per sample (Captum's n_steps), or auto: double until every sample converges.
    n_steps: Any = 50
    #: zeros | mean (the sample set's mean input) | a path to a .npy/.pt file of shape input or (N, *input).
    baseline: str = field(default="zeros", metadata={"choices": _BASELINES, "path_ok": True})
    #: Captum's integration rule.
    method: str = field(default="gausslegendre", metadata={"choices": _METHODS})
    #: Interpolation points per forward+backward pass; null = calibrated within the memory budget.
    internal_batch_size: Optional[int] = field(default=None, metadata={"min": 1})
    #: Samples whose |delta| exceeds this fraction of |f(x) - f(baseline)| are flagged (and refined with auto).
    delta_tolerance: float = field(default=0.05, metadata={"min": 0.0})
    #: Most steps n_steps=auto may use per sample.
    max_steps: int = field(default=512, metadata={"min": 2})
    #: Mixed precision for the attribution passes on GPU: null | bf16 | fp16 (gradients accumulate in float32).
    autocast: Optional[str] = field(default=None, metadata={"choices": (None, *AUTOCAST)})


@register_diagnostic("integrated_gradients")
class IntegratedGradients(AttributionDiagnostic):
    """Integrated Gradients for every sample, with per-sample convergence deltas; ``n_steps: auto`` adapts."""

    Options = IntegratedGradientsOptions

    def validate(self) -> None:
        n = self.options.n_steps
        if n != "auto" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise CerebroConfigError(f"`integrated_gradients.n_steps` must be a positive int or 'auto', got {n!r}")
        if self.options.method.startswith("riemann") and n != "auto" and n < 2:
            raise CerebroConfigError(
                f"`integrated_gradients.n_steps` must be >= 2 with method {self.options.method!r} (Captum's Riemann "
                f"rules need two points), got {n}"
            )
        if self.options.autocast not in (None, *AUTOCAST):
            raise choice_error("integrated_gradients.autocast", self.options.autocast, [None, *AUTOCAST])

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        o = self.options
        limit = o.internal_batch_size or points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        key = (type(ctx.model).__qualname__, tuple(ctx.samples.input_shape), str(ctx.device), o.autocast)
        amp = AUTOCAST.get(o.autocast) if ctx.device.type == "cuda" else None
        if o.autocast and amp is None:
            out.flag(f"autocast {o.autocast} ignored on {ctx.device.type}: attribution passes ran in float32")
        return {"baseline": input_baseline(ctx, o.baseline, self.name), "amp": amp,
                "policy": ChunkPolicy(limit, key, ctx.device, fixed=o.internal_batch_size), "evaluations": 0}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        o, baseline = self.options, state["baseline"]
        block = max(ctx.batch_size, 64)
        for start in range(samples.start, samples.stop, block):
            sl = slice(start, min(start + block, samples.stop))
            x = ctx.grad_x(sl)  # token ids: their embeddings, attributed through ctx.grad_forward
            base = chunk_baseline(baseline, x, sl)
            res = integrated_gradients(ctx.grad_forward, x, base, ctx.grad_index(sl),
                                       None if o.n_steps == "auto" else o.n_steps,
                                       o.method, state["policy"], tolerance=o.delta_tolerance, max_steps=o.max_steps,
                                       autocast=state["amp"])
            maps = ctx.input_maps(res.attributions)  # token ids: one value per token (B, T)
            yield sl.start, {**{k: v.cpu().numpy() for k, v in maps.items()},
                             "convergence_delta": res.delta.double().cpu().numpy(),
                             "gap": res.gap.double().cpu().numpy(), "steps": res.steps.cpu().numpy()}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        o = self.options
        deltas, gaps, steps = arrays["convergence_delta"], arrays["gap"], arrays["steps"]
        out.array("convergence_delta", deltas)
        out.array("steps", steps)
        if "attributions_per_dimension" in arrays:  # token ids with tokens.per_dimension: (N, T, D)
            out.array("attributions_per_dimension", arrays["attributions_per_dimension"])
        rel = np.abs(deltas) / np.maximum(np.abs(gaps), 1e-12)
        adaptive = o.n_steps == "auto"
        out.metric("n_steps", o.n_steps)
        out.metric("steps_max", int(steps.max()))
        out.metric("steps_mean", float(steps.mean()))
        out.metric("evaluations", int(_evaluations(steps, adaptive, o.n_steps)))
        out.metric("method", o.method)
        out.metric("autocast", o.autocast if state["amp"] is not None else None)
        for k, v in state["policy"].describe().items():
            out.metric(k, v)
        out.metric("mean_abs_delta", float(np.mean(np.abs(deltas))))
        out.metric("max_abs_delta", float(np.max(np.abs(deltas))))
        out.metric("median_relative_delta", float(np.median(rel)))
        for key, value in completeness_metrics(deltas + gaps, gaps).items():  # sum(attr) = delta + gap
            out.metric(key, value)
        bad = int(np.sum((rel > o.delta_tolerance) & (np.abs(deltas) > 1e-6)))
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


def _evaluations(steps: np.ndarray, adaptive: bool, n_steps: Any) -> int:
    """Forward+backward evaluations: adaptive runs spent every level they went through (16, 32, ... final)."""
    if not adaptive:
        return int(steps.size * n_steps)
    return int(sum(2 * int(s) - START_STEPS for s in steps))
