"""Mixin for the Captum methods that claim completeness (attributions add up to ``f(x) - f(baseline)``): each block
also stores every sample's attribution sum and its ``f(x) - f(baseline)``, and :meth:`finish` reports the shared
metrics of :func:`cerebro.engine.completeness.completeness_metrics` (and a flag when an exact method misses).

Use it before the method's base class: ``class DeepLift(CompletenessCheck, CaptumMethod)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from cerebro.engine.attribution import MapStats
from cerebro.engine.baselines import chunk_baseline
from cerebro.engine.completeness import COMPLETENESS_WITHIN, completeness_metrics
from cerebro.engine.context import AutopsyContext
from cerebro.report.writer import DiagnosticOutput

__all__ = ["CompletenessCheck"]


class CompletenessCheck:
    """Adds ``attribution_sum`` and ``gap`` per sample and the ``completeness_*`` metrics."""

    #: "exact" (up to the integral's approximation) or "expectation" (sampled methods such as GradientShap).
    completeness_kind: ClassVar[str] = "exact"
    #: Exact methods are flagged when the median relative error exceeds this.
    completeness_tolerance: ClassVar[float] = 0.05

    def extra_arrays(self, ctx: AutopsyContext, attr: Tensor) -> dict[str, np.ndarray]:
        extra = super().extra_arrays(ctx, attr)  # type: ignore[misc]
        flat = attr.detach().double().reshape(attr.shape[0], -1)
        return {**extra, "attribution_sum": flat.sum(dim=1).cpu().numpy()}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for start, arrays in super().blocks(ctx, state, samples):  # type: ignore[misc]
            gap = self.completeness_gap(ctx, state, slice(start, start + len(arrays["attributions"])))
            if gap is not None and "attribution_sum" in arrays:
                arrays["gap"] = gap
            yield start, arrays

    def completeness_gap(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> np.ndarray | None:
        """``f(x) - f(baseline)`` for the samples ``sl``, through the very inputs, forward function and arguments the
        Captum method was given; None when the method has no float input baseline."""
        x, args = self.completeness_inputs(ctx, sl)
        if "baseline" not in state or not x.is_floating_point():
            return None
        base = chunk_baseline(state["baseline"], x, sl)
        f = state["method"].forward_func
        with torch.no_grad():
            return (f(x, *args).double() - f(base, *args).double()).cpu().numpy()

    def completeness_inputs(self, ctx: AutopsyContext, sl: slice) -> tuple[Tensor, tuple[Any, ...]]:
        """The attributed inputs of the samples ``sl`` and the forward function's extra arguments."""
        inputs = getattr(self, "inputs", None)  # CaptumMethod's view (embeddings of token ids), when it has one
        x = inputs(ctx, sl) if inputs is not None else ctx.x(sl)
        forward_args = getattr(self, "forward_args", None)
        args = forward_args(ctx, sl) if forward_args is not None else ctx.forward_args(sl)
        return x, tuple(args or ())

    def completeness_flag(self, ctx: AutopsyContext, metrics: dict[str, Any]) -> str | None:
        """The flag for these metrics, or None (subclasses add what they know, e.g. DeepLift's unsupported layers)."""
        median = metrics["completeness_median_relative_error"]
        if self.completeness_kind != "exact" or median is None or median <= self.completeness_tolerance:
            return None
        return (f"{self.name}: attributions do not sum to f(x) - f(baseline) (completeness: median relative error "  # type: ignore[attr-defined]
                f"{median:.3g}, max {metrics['completeness_max_relative_error']:.3g}, "
                f"{metrics['completeness_within_1pct']:.0%} of samples within {COMPLETENESS_WITHIN:.0%})")

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        super().finish(ctx, out, state, arrays, stats, map_shape)  # type: ignore[misc]
        if "gap" not in arrays or "attribution_sum" not in arrays:
            out.metric("completeness", "not measured (no float input baseline)")
            return
        metrics = completeness_metrics(arrays["attribution_sum"], arrays["gap"], self.completeness_kind)
        for key, value in metrics.items():
            out.metric(key, value)
        flag = self.completeness_flag(ctx, metrics)
        if flag:
            out.flag(flag)
