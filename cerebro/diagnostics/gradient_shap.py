"""``gradient_shap``: expected gradients over random points between the input and baselines drawn from a reference
distribution (seeded; the user's random state is left as it was).

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (arXiv:1705.07874).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import GradientShap as CaptumGradientShap
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.diagnostics.completeness import CompletenessCheck
from cerebro.engine.baselines import input_baseline
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions
from cerebro.registry import register_diagnostic

__all__ = ["GradientShap"]


@dataclass
class GradientShapOptions(PrecisionOptions):
    #: Reference distribution: data (up to `reference_size` samples of the sample set) | zeros | mean | a file.
    baselines: str = field(default="data", metadata={"choices": ("data", "zeros", "mean"), "path_ok": True})
    #: Samples of the reference distribution when baselines=data.
    reference_size: int = field(default=32, metadata={"min": 1})
    #: Random points per input.
    n_samples: int = field(default=20, metadata={"min": 1})
    #: Standard deviation of the Gaussian noise added to each input.
    stdevs: float = field(default=0.0, metadata={"min": 0.0})


@register_diagnostic("gradient_shap")
class GradientShap(CompletenessCheck, CaptumMethod):
    """SHAP values approximated by expected gradients. Completeness holds in expectation only: the attributions of a
    sample add up to ``f(x)`` minus the mean of ``f`` over the reference baselines, up to sampling noise."""

    Options = GradientShapOptions
    reduced_precision = True
    method = CaptumGradientShap
    completeness_kind = "expectation"

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.options.n_samples

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        o = self.options
        if o.baselines == "data":
            g = torch.Generator().manual_seed(ctx.seed)
            pick = torch.randperm(ctx.n, generator=g)[: o.reference_size].sort().values
            refs = torch.cat([ctx.grad_x(slice(int(i), int(i) + 1)).cpu() for i in pick])  # embeddings on token ids
        else:
            refs = input_baseline(ctx, o.baselines, self.name)
        return {**super().start(ctx, out), "baselines": refs}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {"baselines": state["baselines"].to(x.device), "n_samples": self.options.n_samples,
                "stdevs": self.options.stdevs}

    def completeness_gap(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> Any:
        """``f(x)`` minus the mean of ``f`` over the reference baselines, per sample (the explained target and, on
        token ids, the extra arguments differ per sample)."""
        x, args = self.completeness_inputs(ctx, sl)
        if not x.is_floating_point():
            return None
        refs = state["baselines"].to(x.device)
        f = state["method"].forward_func
        with torch.no_grad():
            fx = f(x, *args).double()
            fb = [f(refs, *(a[i : i + 1].expand(refs.shape[0], *a.shape[1:]) if isinstance(a, Tensor) else a
                            for a in args)).double().mean() for i in range(x.shape[0])]
            return (fx - torch.stack(fb)).cpu().numpy()
