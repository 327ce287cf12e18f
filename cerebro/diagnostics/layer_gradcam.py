"""``layer_gradcam``: Grad-CAM on a convolutional layer or on transformer tokens, upsampled onto the input.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017
(arXiv:1610.02391). Channels-first layers use Captum's LayerGradCam; token layers apply the same formula to the
captured ``(B, D, *grid)`` activations and gradients (see :mod:`cerebro.diagnostics.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.diagnostics.layers import LayerChoice, LayerOptions, conv_layers, map_onto_input, token_grid
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions, record_precision
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["LayerGradCam", "conv_layers", "map_onto_input", "token_grid"]


@dataclass
class LayerGradCamOptions(LayerOptions, PrecisionOptions):
    #: Keep only positive evidence (classic Grad-CAM). Off by default: for regression the sign is informative.
    relu: bool = False


@register_diagnostic("layer_gradcam")
class LayerGradCam(LayerChoice, CaptumMethod):
    """Grad-CAM maps of the chosen layer for every sample, as ``(N, 1, *spatial)`` on the input's grid."""

    Options = LayerGradCamOptions
    #: Maps are layer maps placed on the input by :meth:`to_map` (on token ids: one value per token, ``(N, 1, T)``).
    input_maps = False
    #: one gradient per sample: on fast bf16/fp16 hardware the first chunk decides (side by side, maps within
    #: precision_tolerance of fp32)
    reduced_precision = True

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        name, layer, info = self.resolve_layer(ctx)
        return {"name": name, "layer": layer, "method": CaptumLayerGradCam(ctx.forward, layer),
                "per_call": self.samples_per_call(ctx), "plan": self.plan(ctx), **info}

    def output_degree(self, state: dict[str, Any]) -> int | None:
        return None if state["layout"] == "tokens" else 1  # token layers take their gradients through ctx.forward

    def attribute(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> Tensor:
        if state["layout"] == "tokens":
            a, g = self.token_tensors(ctx, state["layer"], state["name"], ctx.x(sl), ctx.forward_args(sl), state)
            cam = (g.mean(dim=tuple(range(2, g.ndim)), keepdim=True) * a).sum(dim=1, keepdim=True)
            return torch.relu(cam) if self.options.relu else cam
        return state["method"].attribute(ctx.x(sl), additional_forward_args=ctx.forward_args(sl),
                                         relu_attributions=self.options.relu, attr_dim_summation=True,
                                         attribute_to_layer_input=state["layer_input"])

    def to_map(self, ctx: AutopsyContext, state: dict[str, Any], attr: Tensor) -> Tensor:
        state.setdefault("raw_shape", tuple(attr.shape[1:]))
        return map_onto_input(attr, ctx.samples.input_shape)

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        name = state["name"]
        self.record_layer(out, state)
        if state["layout"] == "tokens":
            out.metric("prefix_tokens", state["prefix"])
            out.metric("token_grid", list(state["grid"]))
        out.metric("layer_map_shape", state.get("raw_shape"))
        out.metric("map_shape", map_shape)
        if state.get("plan") is not None:
            record_precision(out, state["plan"])
        for reason in stats.reasons():
            out.flag(f"{reason} (layer {name})")
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs[0], ctx.samples.input_shape, "Grad-CAM")
