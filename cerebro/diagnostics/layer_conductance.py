"""``layer_conductance``: conductance of a layer's units (the flow of Integrated Gradients through them).

Dhamdhere, Sundararajan & Yan, "How Important Is a Neuron?", ICLR 2019 (arXiv:1805.12233).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captum.attr import LayerConductance as CaptumLayerConductance
from torch import Tensor

from cerebro.diagnostics.completeness import CompletenessCheck
from cerebro.diagnostics.layer_method import LayerMethod
from cerebro.diagnostics.layers import LayerOptions
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions
from cerebro.registry import register_diagnostic

__all__ = ["LayerConductance"]


@dataclass
class LayerConductanceOptions(LayerOptions, PrecisionOptions):
    #: Integration steps per sample.
    n_steps: int = field(default=32, metadata={"min": 2})
    #: Input baseline: zeros | mean | a path to a .npy/.pt file.
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean"), "path_ok": True})


@register_diagnostic("layer_conductance")
class LayerConductance(CompletenessCheck, LayerMethod):
    """Conductance of every unit of the layer, summed over channels and mapped onto the input."""

    Options = LayerConductanceOptions
    reduced_precision = True
    method = CaptumLayerConductance
    input_baseline = True

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.options.n_steps + 1

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {**super().kwargs(ctx, state, x, sl), "n_steps": self.options.n_steps}
