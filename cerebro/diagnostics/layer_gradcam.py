"""``layer_gradcam``: Grad-CAM on a convolutional layer or on transformer tokens, upsampled onto the input.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017
(arXiv:1610.02391). Channels-first layers use Captum's LayerGradCam; token layers apply the same formula to the
captured ``(B, D, *grid)`` activations and gradients (see :mod:`cerebro.diagnostics.layers`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import Tensor

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.diagnostics.layers import LayerChoice, LayerOptions, conv_layers, map_onto_input, token_grid
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.budget import points_per_pass
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["LayerGradCam", "conv_layers", "map_onto_input", "token_grid"]


@dataclass
class LayerGradCamOptions(LayerOptions):
    #: Keep only positive evidence (classic Grad-CAM). Off by default: for regression the sign is informative.
    relu: bool = False


@register_diagnostic("layer_gradcam")
class LayerGradCam(LayerChoice, AttributionDiagnostic):
    """Grad-CAM maps of the chosen layer for every sample, as ``(N, 1, *spatial)`` on the input's grid."""

    Options = LayerGradCamOptions

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        name, layer = self.select_layer(ctx.model)
        info = self.inspect(ctx, name, layer)
        per_call = max(1, min(ctx.batch_size, points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)))
        return {"name": name, "layer": layer, "gradcam": CaptumLayerGradCam(ctx.forward, layer), "per_call": per_call,
                **info}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        policy = ChunkPolicy(state["per_call"], None, ctx.device, fixed=state["per_call"])  # halves on CUDA OOM
        start = samples.start
        while start < samples.stop:
            def one(size: int, first: int = start) -> Tensor:
                sl = slice(first, first + size)
                if state["layout"] == "tokens":
                    a, g = self.token_tensors(ctx, state["layer"], state["name"], ctx.x(sl), ctx.forward_args(sl), state)
                    cam = (g.mean(dim=tuple(range(2, g.ndim)), keepdim=True) * a).sum(dim=1, keepdim=True)
                    return torch.relu(cam) if self.options.relu else cam
                return state["gradcam"].attribute(ctx.x(sl), additional_forward_args=ctx.forward_args(sl),
                                                  relu_attributions=self.options.relu, attr_dim_summation=True,
                                                  attribute_to_layer_input=state["layer_input"])

            size, cam = policy.run(samples.stop - start, one)
            state.setdefault("raw_shape", tuple(cam.shape[1:]))
            yield start, {"attributions": map_onto_input(cam.detach().float(), ctx.samples.input_shape).cpu().numpy()}
            start += size

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        name = state["name"]
        out.metric("layer", name)
        out.metric("layout", state["layout"])
        out.metric("layer_input", state["layer_input"])
        if state["layout"] == "tokens":
            out.metric("prefix_tokens", state["prefix"])
            out.metric("token_grid", list(state["grid"]))
        out.metric("layer_map_shape", state.get("raw_shape"))
        out.metric("map_shape", map_shape)
        for reason in stats.reasons():
            out.flag(f"{reason} (layer {name})")
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs[0], ctx.samples.input_shape, "Grad-CAM")
