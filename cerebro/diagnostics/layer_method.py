"""Base of Captum's layer attribution methods: a layer chosen like Grad-CAM's, and its attributions summed over
channels (or token features) and placed on the input's grid as ``(N, 1, *spatial)`` maps."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.diagnostics.layers import LayerChoice, layer_map
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import record_precision
from cerebro.report.writer import DiagnosticOutput

__all__ = ["LayerMethod"]


class LayerMethod(LayerChoice, CaptumMethod):
    """Subclasses set :attr:`method` (a ``captum.attr`` layer class) and their Options (a ``LayerOptions``)."""

    input_maps = False

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        name, layer, info = self.resolve_layer(ctx)
        return {"name": name, "method": self.method(ctx.grad_forward, layer), "per_call": self.samples_per_call(ctx),
                "plan": self.plan(ctx), **self.baseline_state(ctx), **info}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {"attribute_to_layer_input": state["layer_input"]}

    def to_map(self, ctx: AutopsyContext, state: dict[str, Any], attr: Tensor) -> Tensor:
        return layer_map(attr, state, tuple(ctx.samples.input_shape))

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        self.record_layer(out, state)
        out.metric("map_shape", map_shape)
        if state.get("plan") is not None:
            record_precision(out, state["plan"])
        for reason in stats.reasons():
            out.flag(f"{reason} (layer {state['name']})")
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs[0], tuple(ctx.samples.input_shape), self.name.replace("_", " "))
