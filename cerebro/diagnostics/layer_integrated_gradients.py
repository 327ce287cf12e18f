"""``layer_integrated_gradients``: Integrated Gradients of the target scalar with respect to a layer's output.

Sundararajan, Taly & Yan, ICML 2017 (arXiv:1703.01365), applied to a layer as in Captum's LayerIntegratedGradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captum.attr import LayerIntegratedGradients as CaptumLayerIG
from torch import Tensor

from cerebro.diagnostics.completeness import CompletenessCheck
from cerebro.diagnostics.layer_method import LayerMethod
from cerebro.diagnostics.layers import LayerOptions
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions
from cerebro.registry import register_diagnostic

__all__ = ["LayerIntegratedGradients"]

_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")


@dataclass
class LayerIntegratedGradientsOptions(LayerOptions, PrecisionOptions):
    #: Integration steps per sample.
    n_steps: int = field(default=32, metadata={"min": 2})
    #: Captum's integration rule.
    method: str = field(default="gausslegendre", metadata={"choices": _METHODS})
    #: Input baseline: zeros | mean | a path to a .npy/.pt file.
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean"), "path_ok": True})


@register_diagnostic("layer_integrated_gradients")
class LayerIntegratedGradients(CompletenessCheck, LayerMethod):
    """Each layer unit's share of ``f(x) - f(baseline)``, summed over channels and mapped onto the input."""

    Options = LayerIntegratedGradientsOptions
    reduced_precision = True
    method = CaptumLayerIG
    input_baseline = True

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.options.n_steps

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {**super().kwargs(ctx, state, x, sl), "n_steps": self.options.n_steps, "method": self.options.method}
