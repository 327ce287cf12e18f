"""``layer_gradcam``: Captum's LayerGradCam on a convolutional layer, upsampled onto the input.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017
(arXiv:1610.02391).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, List, Optional

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


_TOKEN_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.MultiheadAttention,
                nn.LayerNorm, nn.Linear)
_LAYOUTS = ("auto", "channels_first", "tokens")


@dataclass
class LayerGradCamOptions:
    #: Dotted name of the layer (see model.named_modules()), or auto: the last transformer encoder layer if the
    #: model has one after its last convolution, else the last Conv1d/2d/3d.
    layer: str = "auto"
    #: Keep only positive evidence (classic Grad-CAM). Off by default: for regression the sign is informative.
    relu: bool = False
    #: How the layer's output is laid out: channels_first (B, C, *spatial), tokens (B, N, D) (batch_first), or auto
    #: (tokens for transformer layers, LayerNorm and Linear on 3-D outputs, channels_first otherwise).
    layout: str = field(default="auto", metadata={"choices": _LAYOUTS})
    #: Tokens: class/register tokens before the patch tokens; null = from the model's cls/register token parameters
    #: (and, for images, the count that leaves a square grid).
    prefix_tokens: Optional[int] = field(default=None, metadata={"min": 0})
    #: Tokens: the patch grid, e.g. [14, 14] for images or [25] for a signal; null = square grid for images, 1-D
    #: for signals.
    grid: Optional[List[int]] = None
    #: Use the layer's input instead of its output (Captum's attribute_to_layer_input). With layer=auto on a
    #: class-token transformer, whose last block passes on only the class token, the last block's input is used.
    layer_input: bool = False


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _CONV)]


def _transformer_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))]


def _is_token_layer(model: nn.Module, name: str) -> bool:
    modules = dict(model.named_modules())
    parts = name.split(".")
    chain = [modules[".".join(parts[:i])] for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]
    return isinstance(modules[name], _TOKEN_TYPES) or any(
        isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) for m in chain)


def _declared_prefix_tokens(model: nn.Module) -> int:
    """Class and register tokens declared as parameters (``cls_token``, ``class_token``, ``register_tokens``...)."""
    count = 0
    for n, p in model.named_parameters():
        leaf = n.rsplit(".", 1)[-1].lower()
        if leaf in ("cls_token", "class_token", "dist_token") or leaf.startswith(("register_token", "reg_token")):
            count += int(p.shape[-2]) if p.ndim >= 2 else 1
    return count


def token_grid(n_tokens: int, input_shape: tuple[int, ...], prefix: int | None, grid: list[int] | None,
               declared: int) -> tuple[int, tuple[int, ...]]:
    """``(prefix tokens, grid)`` that turn ``n_tokens`` tokens into a spatial map for ``input_shape``."""
    if prefix is None:
        if len(input_shape) >= 3 and grid is None:  # images: the prefix that leaves a square grid
            squares = [p for p in range(0, min(n_tokens, 9)) if math.isqrt(n_tokens - p) ** 2 == n_tokens - p]
            if not squares:
                raise CerebroConfigError(f"layer_gradcam: {n_tokens} tokens do not form a square grid after up to 8 "
                                         "class/register tokens; set layer_gradcam.grid and prefix_tokens")
            prefix = declared if declared in squares else squares[0]
        else:
            prefix = declared
    rest = n_tokens - prefix
    if grid is None:
        grid = [math.isqrt(rest)] * 2 if len(input_shape) >= 3 else [rest]
    if rest <= 0 or math.prod(grid) != rest:
        raise CerebroConfigError(f"layer_gradcam: {n_tokens} tokens minus {prefix} prefix tokens = {rest} cannot "
                                 f"form the grid {list(grid)}; set layer_gradcam.grid and prefix_tokens")
    return prefix, tuple(grid)


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
        modules = dict(model.named_modules())
        if self.options.layer == "auto":
            convs, blocks = conv_layers(model), _transformer_layers(model)
            order = list(modules)
            if blocks and (not convs or order.index(blocks[-1]) > order.index(convs[-1])):
                return blocks[-1], modules[blocks[-1]]
            if not convs:
                names = [n for n in modules if n]
                raise CerebroConfigError(
                    f"layer_gradcam: layer=auto found no Conv1d/Conv2d/Conv3d or transformer layer in "
                    f"{type(model).__name__}; set layer_gradcam.layer to a layer with a spatial or token output. "
                    f"Layers: {names[-12:]}"
                )
            return convs[-1], modules[convs[-1]]
        return self.options.layer, find_module(model, self.options.layer, conv_layers(model) or None)

    def check_model(self, model: nn.Module) -> None:
        self._layer(model)

    def _inspect(self, ctx: AutopsyContext, name: str, layer: nn.Module) -> dict[str, Any]:
        """How the layer's output becomes a map: its layout and, for tokens, the prefix and grid."""
        shapes: dict[str, tuple[int, ...]] = {}

        def grab(n: str, _m: nn.Module, o: object) -> None:
            t = tensor_output(o)
            shapes[n] = tuple(t.shape) if t is not None else ()

        probe = ctx.x(slice(0, min(2, ctx.n)))
        with torch.no_grad(), forward_hooks({name: layer}, grab, inputs=self.options.layer_input):
            ctx.model(probe)
        candidates = conv_layers(ctx.model) + _transformer_layers(ctx.model)
        if name not in shapes:
            raise CerebroConfigError(f"layer_gradcam: layer {name!r} is not used in the model's forward pass; "
                                     f"candidates: {candidates}")
        shape = shapes[name]
        layout = self.options.layout
        if layout == "auto":
            layout = "tokens" if len(shape) == 3 and _is_token_layer(ctx.model, name) else "channels_first"
        if len(shape) < 3 or (layout == "tokens" and len(shape) != 3):
            raise CerebroConfigError(
                f"layer_gradcam: layer {name!r} outputs shape {shape or type(layer).__name__}, which has no spatial "
                f"or token axis (need (B, C, L), (B, C, H, W), (B, C, D, H, W) or tokens (B, N, D)); "
                f"candidates: {candidates}"
            )
        if shape[0] != probe.shape[0]:
            raise CerebroConfigError(f"layer_gradcam: layer {name!r} outputs {shape} for a batch of {probe.shape[0]}: "
                                     "the batch is not its first axis (use batch_first=True transformer layers)")
        info: dict[str, Any] = {"layout": layout, "layer_input": self.options.layer_input}
        if layout == "tokens":
            info["prefix"], info["grid"] = token_grid(shape[1], tuple(ctx.samples.input_shape),
                                                      self.options.prefix_tokens, self.options.grid,
                                                      _declared_prefix_tokens(ctx.model))
            auto_block = self.options.layer == "auto" and not self.options.layer_input
            if auto_block and not self._token_cam(ctx, layer, name, probe, ctx.forward_args(slice(0, probe.shape[0])),
                                                  info).any():
                # Only the class token of the last block reaches the head: its other tokens have no gradient.
                info["layer_input"] = True
        return info

    def _token_cam(self, ctx: AutopsyContext, layer: nn.Module, name: str, x: Tensor, args: tuple | None,
                   info: dict[str, Any]) -> Tensor:
        """Grad-CAM on tokens: activations and gradients of ``(B, N, D)`` reshaped to ``(B, D, *grid)`` after the
        forward pass (the layer still returns tokens to the next block), then Captum's Grad-CAM formula."""
        held: list[Tensor] = []

        def keep(_n: str, _m: nn.Module, o: object) -> None:
            t = tensor_output(o)
            if t is not None:
                held.append(t)

        prefix, grid = info["prefix"], info["grid"]
        with torch.enable_grad(), forward_hooks({name: layer}, keep, inputs=info["layer_input"]):
            scores = ctx.forward(x.clone().requires_grad_(True), *(args or ()))
        acts = held[-1]
        (grads,) = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
        if grads is None:
            raise CerebroConfigError(f"layer_gradcam: layer {name!r} is disconnected from the output: its output does "
                                     "not reach the explained score; choose a layer on the path to the output")

        def spatial(t: Tensor) -> Tensor:
            return t[:, prefix:, :].transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)

        a, g = spatial(acts.detach()), spatial(grads.detach())
        cam = (g.mean(dim=tuple(range(2, g.ndim)), keepdim=True) * a).sum(dim=1, keepdim=True)
        return torch.relu(cam) if self.options.relu else cam

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        name, layer = self._layer(ctx.model)
        info = self._inspect(ctx, name, layer)
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
                    return self._token_cam(ctx, state["layer"], state["name"], ctx.x(sl), ctx.forward_args(sl), state)
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
