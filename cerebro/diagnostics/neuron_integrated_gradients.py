"""``neuron_integrated_gradients``: Integrated Gradients of one named neuron (a unit of a layer's output) with
respect to the input.

Sundararajan, Taly & Yan, ICML 2017 (arXiv:1703.01365), as Captum's NeuronIntegratedGradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import torch
from captum.attr import NeuronIntegratedGradients as CaptumNeuronIG
from torch import Tensor, nn

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module, forward_hooks, tensor_output
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic

__all__ = ["NeuronIntegratedGradients"]


@dataclass
class NeuronIntegratedGradientsOptions:
    #: Dotted name of the layer holding the neuron (required).
    layer: str = ""
    #: Index of the neuron in the layer's output without the batch axis, e.g. [3] or [channel, time].
    neuron: List[int] = field(default_factory=list)
    #: Integration steps per sample.
    n_steps: int = field(default=32, metadata={"min": 2})
    #: Input baseline: zeros | mean | a path to a .npy/.pt file.
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean"), "path_ok": True})


@register_diagnostic("neuron_integrated_gradients")
class NeuronIntegratedGradients(CaptumMethod):
    """Which input values drive one neuron."""

    Options = NeuronIntegratedGradientsOptions
    input_baseline = True

    def validate(self) -> None:
        if not self.options.layer or not self.options.neuron:
            raise CerebroConfigError("neuron_integrated_gradients needs `layer` (a dotted name) and `neuron` (its "
                                     "index in the layer's output without the batch axis, e.g. [3])")

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.options.n_steps

    def check_model(self, model: nn.Module) -> None:
        find_module(model, self.options.layer)

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        layer = find_module(ctx.model, self.options.layer)
        shapes: list[tuple[int, ...]] = []
        with torch.no_grad(), forward_hooks({self.options.layer: layer},
                                            lambda n, m, o: shapes.append(tuple(tensor_output(o).shape[1:]))):
            ctx.model(ctx.x(slice(0, 1)))
        neuron = tuple(self.options.neuron)
        if not shapes or len(neuron) != len(shapes[0]) or any(not 0 <= i < s for i, s in zip(neuron, shapes[0])):
            raise CerebroConfigError(f"neuron_integrated_gradients: neuron {list(neuron)} is not an index of layer "
                                     f"{self.options.layer!r} outputs of shape {list(shapes[0]) if shapes else '?'}")
        out.metric("layer", self.options.layer)
        out.metric("neuron", list(neuron))
        return {"method": CaptumNeuronIG(ctx.grad_forward, layer), "per_call": self.samples_per_call(ctx),
                "neuron": neuron, **self.baseline_state(ctx)}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {"neuron_selector": state["neuron"], "n_steps": self.options.n_steps}
