"""``layer_gradcam``: Captum's LayerGradCam on a convolutional layer, upsampled onto the input.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017
(arXiv:1610.02391).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam as CaptumLayerGradCam
from torch import Tensor, nn

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.budget import points_per_pass
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module, forward_hooks, tensor_output
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["LayerGradCam", "conv_layers", "map_onto_input"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


@dataclass
class LayerGradCamOptions:
    #: Dotted name of the layer (see model.named_modules()), or auto for the last Conv1d/2d/3d.
    layer: str = "auto"
    #: Keep only positive evidence (classic Grad-CAM). Off by default: for regression the sign is informative.
    relu: bool = False


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _CONV)]


def map_onto_input(cam: Tensor, input_shape: tuple[int, ...]) -> Tensor:
    """Upsample a ``(B, 1, *map)`` Grad-CAM map onto the input's resolution.

    ``(C, T)`` signals: a 1-D map, or a 2-D map with one row, goes onto the time axis as ``(B, 1, T)``; a 2-D map
    that keeps the electrode axis goes onto ``(B, 1, C, T)``. Images ``(C, H, W)``: ``(B, 1, H, W)``.
    """
    spatial = tuple(cam.shape[2:])
    if len(input_shape) == 2 and len(spatial) == 2 and spatial[0] == 1:
        cam, spatial = cam[:, :, 0], spatial[1:]
    if len(input_shape) == 2:
        size = (input_shape[1],) if len(spatial) == 1 else tuple(input_shape) if len(spatial) == 2 else None
    elif len(input_shape) >= 3 and 1 <= len(spatial) <= 3:
        size = tuple(input_shape[-len(spatial):]) if len(spatial) > 1 else (input_shape[-1],)
    elif len(input_shape) == 1 and len(spatial) == 1:
        size = (input_shape[0],)
    else:
        size = None
    if not spatial or size is None:
        raise CerebroConfigError(f"cannot place a layer map of shape {tuple(cam.shape[1:])} onto input {input_shape}")
    if tuple(spatial) == size:
        return cam
    return LayerAttribution.interpolate(cam, size, interpolate_mode=_MODES[len(size)])


@register_diagnostic("layer_gradcam")
class LayerGradCam(AttributionDiagnostic):
    """Grad-CAM maps of the chosen layer for every sample, as ``(N, 1, *spatial)`` on the input's grid."""

    Options = LayerGradCamOptions

    def _layer(self, model: nn.Module) -> tuple[str, nn.Module]:
        if self.options.layer == "auto":
            convs = conv_layers(model)
            if not convs:
                names = [n for n, _ in model.named_modules() if n]
                raise CerebroConfigError(
                    f"layer_gradcam: layer=auto found no Conv1d/Conv2d/Conv3d in {type(model).__name__}; set "
                    f"layer_gradcam.layer to a layer with a spatial output. Layers: {names[-12:]}"
                )
            return convs[-1], dict(model.named_modules())[convs[-1]]
        return self.options.layer, find_module(model, self.options.layer, conv_layers(model) or None)

    def check_model(self, model: nn.Module) -> None:
        self._layer(model)

    def _check_spatial(self, ctx: AutopsyContext, name: str, layer: nn.Module) -> None:
        shapes: dict[str, tuple[int, ...]] = {}

        def grab(n: str, _m: nn.Module, o: object) -> None:
            t = tensor_output(o)
            shapes[n] = tuple(t.shape) if t is not None else ()

        with torch.no_grad(), forward_hooks({name: layer}, grab):
            ctx.model(ctx.x(slice(0, 1)))
        if name not in shapes:
            raise CerebroConfigError(f"layer_gradcam: layer {name!r} is not used in the model's forward pass; "
                                     f"candidates: {conv_layers(ctx.model)}")
        if len(shapes[name]) < 3:
            raise CerebroConfigError(
                f"layer_gradcam: layer {name!r} outputs shape {shapes[name]} without a spatial axis (need (B, C, L), "
                f"(B, C, H, W) or (B, C, D, H, W)); candidates: {conv_layers(ctx.model)}"
            )

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        name, layer = self._layer(ctx.model)
        self._check_spatial(ctx, name, layer)
        per_call = max(1, min(ctx.batch_size, points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)))
        return {"name": name, "gradcam": CaptumLayerGradCam(ctx.forward, layer), "per_call": per_call}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        policy = ChunkPolicy(state["per_call"], None, ctx.device, fixed=state["per_call"])  # halves on CUDA OOM
        start = samples.start
        while start < samples.stop:
            def one(size: int, first: int = start) -> Tensor:
                sl = slice(first, first + size)
                return state["gradcam"].attribute(ctx.x(sl), additional_forward_args=ctx.forward_args(sl),
                                                  relu_attributions=self.options.relu, attr_dim_summation=True)

            size, cam = policy.run(samples.stop - start, one)
            state.setdefault("raw_shape", tuple(cam.shape[1:]))
            yield start, {"attributions": map_onto_input(cam.detach().float(), ctx.samples.input_shape).cpu().numpy()}
            start += size

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        name = state["name"]
        out.metric("layer", name)
        out.metric("layer_map_shape", state.get("raw_shape"))
        out.metric("map_shape", map_shape)
        for reason in stats.reasons():
            out.flag(f"{reason} (layer {name})")
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs[0], ctx.samples.input_shape, "Grad-CAM")
