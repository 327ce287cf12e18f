"""Choosing and reading a layer for layer attributions (Grad-CAM, layer IG, conductance, activations).

A layer is named by its dotted path or chosen automatically; its output is either channels-first
``(B, C, *spatial)`` or transformer tokens ``(B, N, D)``. Tokens become a spatial map on the captured tensors (the
class/register tokens dropped, the rest reshaped to their grid), never by changing what the layer returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from captum.attr import LayerAttribution
from torch import Tensor, nn

from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module, forward_hooks, tensor_output
from cerebro.errors import CerebroConfigError

__all__ = ["LayerOptions", "LayerChoice", "conv_layers", "token_grid", "map_onto_input", "to_grid", "layer_map"]


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


_TOKEN_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.MultiheadAttention,
                nn.LayerNorm, nn.Linear)
_LAYOUTS = ("auto", "channels_first", "tokens")


@dataclass
class LayerOptions:
    #: Dotted name of the layer (see model.named_modules()), or auto: the last transformer encoder layer if the
    #: model has one after its last convolution, else the last Conv1d/2d/3d outside residual shortcuts
    #: (modules named shortcut/downsample/skip).
    layer: str = "auto"
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


#: Module names of residual shortcut branches (torchvision ``downsample``, timm/others ``shortcut``, ``skip``).
_SHORTCUTS = {"shortcut", "downsample", "skip", "skip_connection"}


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _CONV)]


def _main_path_convs(model: nn.Module) -> list[str]:
    """Convolutions outside residual shortcut branches (a ResNet block registers its 1x1 shortcut after conv2)."""
    convs = conv_layers(model)
    return [n for n in convs if not _SHORTCUTS & set(n.split("."))] or convs


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
               declared: int, owner: str = "layer_gradcam") -> tuple[int, tuple[int, ...]]:
    """``(prefix tokens, grid)`` that turn ``n_tokens`` tokens into a spatial map for ``input_shape``."""
    if prefix is None:
        if len(input_shape) >= 3 and grid is None:  # images: the prefix that leaves a square grid
            squares = [p for p in range(0, min(n_tokens, 9)) if math.isqrt(n_tokens - p) ** 2 == n_tokens - p]
            if not squares:
                raise CerebroConfigError(f"{owner}: {n_tokens} tokens do not form a square grid after up to 8 "
                                         f"class/register tokens; set {owner}.grid and prefix_tokens")
            prefix = declared if declared in squares else squares[0]
        else:
            prefix = declared
    rest = n_tokens - prefix
    if grid is None:
        grid = [math.isqrt(rest)] * 2 if len(input_shape) >= 3 else [rest]
    if rest <= 0 or math.prod(grid) != rest:
        raise CerebroConfigError(f"{owner}: {n_tokens} tokens minus {prefix} prefix tokens = {rest} cannot "
                                 f"form the grid {list(grid)}; set {owner}.grid and prefix_tokens")
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


class LayerChoice:
    """Mixin of layer diagnostics: which layer, checked in ``setup``, and how its output becomes a map."""

    options: Any
    name: str

    def select_layer(self, model: nn.Module) -> tuple[str, nn.Module]:
        modules = dict(model.named_modules())
        if self.options.layer == "auto":
            convs, blocks = _main_path_convs(model), _transformer_layers(model)
            order = list(modules)
            if blocks and (not convs or order.index(blocks[-1]) > order.index(convs[-1])):
                return blocks[-1], modules[blocks[-1]]
            if not convs:
                names = [n for n in modules if n]
                raise CerebroConfigError(
                    f"{self.name}: layer=auto found no Conv1d/Conv2d/Conv3d or transformer layer in "
                    f"{type(model).__name__}; set {self.name}.layer to a layer with a spatial or token output. "
                    f"Layers: {names[-12:]}"
                )
            return convs[-1], modules[convs[-1]]
        return self.options.layer, find_module(model, self.options.layer, conv_layers(model) or None)

    def check_model(self, model: nn.Module) -> None:
        self.select_layer(model)

    def inspect(self, ctx: AutopsyContext, name: str, layer: nn.Module) -> dict[str, Any]:
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
            raise CerebroConfigError(f"{self.name}: layer {name!r} is not used in the model's forward pass; "
                                     f"candidates: {candidates}")
        shape = shapes[name]
        layout = self.options.layout
        if layout == "auto":
            layout = "tokens" if len(shape) == 3 and _is_token_layer(ctx.model, name) else "channels_first"
        if len(shape) < 3 or (layout == "tokens" and len(shape) != 3):
            raise CerebroConfigError(
                f"{self.name}: layer {name!r} outputs shape {shape or type(layer).__name__}, which has no spatial "
                f"or token axis (need (B, C, L), (B, C, H, W), (B, C, D, H, W) or tokens (B, N, D)); "
                f"candidates: {candidates}"
            )
        if shape[0] != probe.shape[0]:
            raise CerebroConfigError(f"{self.name}: layer {name!r} outputs {shape} for a batch of {probe.shape[0]}: "
                                     "the batch is not its first axis (use batch_first=True transformer layers)")
        info: dict[str, Any] = {"layout": layout, "layer_input": self.options.layer_input}
        if layout == "tokens":
            info["prefix"], info["grid"] = token_grid(shape[1], tuple(ctx.samples.input_shape),
                                                      self.options.prefix_tokens, self.options.grid,
                                                      _declared_prefix_tokens(ctx.model), owner=self.name)
            auto_block = self.options.layer == "auto" and not self.options.layer_input
            if auto_block and not self.token_tensors(ctx, layer, name, probe, ctx.forward_args(
                    slice(0, probe.shape[0])), info)[1].any():
                # Only the class token of the last block reaches the head: its other tokens have no gradient.
                info["layer_input"] = True
        return info

    def token_tensors(self, ctx: AutopsyContext, layer: nn.Module, name: str, x: Tensor, args: tuple | None,
                      info: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Activations and gradients of a token layer as ``(B, D, *grid)`` maps (prefix tokens dropped), reshaped
        after the forward pass so that the layer still hands tokens to the next block."""
        held: list[Tensor] = []

        def keep(_n: str, _m: nn.Module, o: object) -> None:
            t = tensor_output(o)
            if t is not None:
                held.append(t)

        with torch.enable_grad(), forward_hooks({name: layer}, keep, inputs=info["layer_input"]):
            scores = ctx.forward(x.clone().requires_grad_(True), *(args or ()))
        (grads,) = torch.autograd.grad(scores.sum(), held[-1], allow_unused=True)
        if grads is None:
            raise CerebroConfigError(f"layer {name!r} is disconnected from the output: its output does not reach "
                                     "the explained score; choose a layer on the path to the output")
        return to_grid(held[-1].detach(), info), to_grid(grads.detach(), info)


def to_grid(tokens: Tensor, info: dict[str, Any]) -> Tensor:
    """``(B, N, D)`` tokens -> ``(B, D, *grid)``, dropping the prefix (class/register) tokens."""
    t = tokens[:, info["prefix"] :, :]
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *info["grid"])


def layer_map(attr: Tensor, info: dict[str, Any], input_shape: tuple[int, ...]) -> Tensor:
    """A layer attribution summed over its channels (or token features) and placed on the input's grid."""
    spatial = to_grid(attr, info) if info["layout"] == "tokens" else attr
    return map_onto_input(spatial.sum(dim=1, keepdim=True).float(), input_shape)
