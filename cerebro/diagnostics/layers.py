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

from cerebro import adapters
from cerebro.adapters.cnn import conv_layers, main_path_convs
from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module, forward_hooks, tensor_output
from cerebro.errors import CerebroConfigError

__all__ = ["LayerOptions", "LayerChoice", "conv_layers", "token_grid", "map_onto_input", "to_grid", "layer_map"]


_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

#: Modules whose 3-D output is tokens ``(B, N, D)`` wherever they are (PyTorch's transformer pieces, and the
#: per-token LayerNorm/Linear).
_TOKEN_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.MultiheadAttention,
                nn.LayerNorm, nn.Linear)
_LAYOUTS = ("auto", "channels_first", "tokens")


@dataclass
class LayerOptions:
    #: Dotted name of the layer (see model.named_modules()), or auto: on a transformer (blocks found by
    #: cerebro.adapters: Hugging Face, timm, torch.nn) the first block's input (the patch/word tokens before any
    #: attention mixing; measured to localise where later blocks do not), else the last Conv1d/2d/3d outside
    #: residual shortcuts (modules named shortcut/downsample/skip) whose output has more than one spatial/time
    #: position (1x1 outputs give constant maps: auto walks back and says so in the metrics).
    layer: str = "auto"
    #: How the layer's output is laid out: channels_first (B, C, *spatial), tokens (B, N, D) (batch_first), or auto
    #: (tokens for transformer blocks and anything inside them, embeddings and 3-D outputs of width D = the
    #: model's hidden size on sequence models, LayerNorm and Linear on 3-D outputs; channels_first for
    #: convolutional models). A 3-D output that cannot be decided is an error asking for this option.
    layout: str = field(default="auto", metadata={"choices": _LAYOUTS})
    #: Tokens: class/register tokens before the patch tokens; null = from the model's family (timm
    #: num_prefix_tokens) or its cls/register token parameters (and, for images, the count that leaves a square grid).
    prefix_tokens: Optional[int] = field(default=None, metadata={"min": 0})
    #: Tokens: the patch grid, e.g. [14, 14] for images or [25] for a signal; null = square grid for images, 1-D
    #: for signals and token sequences.
    grid: Optional[List[int]] = None
    #: Use the layer's input instead of its output (Captum's attribute_to_layer_input). A token layer whose patch
    #: tokens do not reach the output (the last block of a class-token model passes on only the class token) is
    #: moved to its input automatically, with a note in the metrics.
    layer_input: bool = False


def _is_token_layer(model: nn.Module, name: str) -> bool:
    """The module is a transformer block, inside one, or a per-token module type."""
    blocks = adapters.token_blocks(model)
    inside = any(name == b or name.startswith(b + ".") for b in blocks)
    return inside or isinstance(dict(model.named_modules())[name], _TOKEN_TYPES)


def _layout(model: nn.Module, name: str, shape: tuple[int, ...], owner: str) -> str:
    """``tokens`` or ``channels_first`` for a layer output of ``shape``; an undecidable 3-D output is an error."""
    if len(shape) != 3:
        return "channels_first"
    if _is_token_layer(model, name):
        return "tokens"
    if adapters.is_sequence_model(model):
        widths = adapters.hidden_sizes(model)
        if shape[-1] in widths:
            return "tokens"
        if shape[1] in widths:
            return "channels_first"
    elif conv_layers(model):
        return "channels_first"  # a convolutional model without tokens: (B, C, L) feature maps
    raise CerebroConfigError(
        f"{owner}: cannot tell whether layer {name!r} with output {shape} is channels-first (B, C, L) or tokens "
        f"(B, N, D) (the model's known token widths: {sorted(adapters.hidden_sizes(model)) or 'none'}); set "
        f"{owner}.layout: tokens or {owner}.layout: channels_first")


def _declared_prefix_tokens(model: nn.Module) -> int:
    """Class/register tokens of the model, as its family declares them (kept for callers of the old name)."""
    return adapters.prefix_tokens(model)


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


def _extent(shape: tuple[int, ...], layout: str) -> int:
    """Spatial/time/token positions of a layer output (tokens: all of them; class tokens are dropped later)."""
    return shape[1] if layout == "tokens" else math.prod(shape[2:]) if len(shape) >= 3 else 1


def _walk_back_order(model: nn.Module) -> list[str]:
    """Where ``layer: auto`` looks on a convolutional model, preferred first: main-path convolutions from the last,
    then modules made of convolutions (braindecode's CombinedConv computes with its children's weights without
    calling them, so only the parent has an output)."""
    convs = main_path_convs(model)
    parents = [n for n, _ in model.named_modules() if n and any(c.startswith(n + ".") for c in convs)]
    return list(reversed(convs)) + list(reversed(parents))


class LayerChoice:
    """Mixin of layer diagnostics: which layer, checked in ``setup``, and how its output becomes a map."""

    options: Any
    name: str

    def _auto_candidates(self, model: nn.Module) -> tuple[list[str], bool, str]:
        """``(names, use_input, why)``: the layers auto may use, preferred first, and whether it takes their input."""
        convs, blocks = main_path_convs(model), adapters.token_blocks(model)
        order = list(dict(model.named_modules()))
        if blocks and (not convs or order.index(blocks[-1]) > order.index(convs[-1])):
            return [blocks[0]], True, "the first transformer block's input (tokens before any attention mixing)"
        if not convs:
            names = [n for n in order if n]
            raise CerebroConfigError(
                f"{self.name}: layer=auto found no Conv1d/Conv2d/Conv3d or transformer layer in "
                f"{type(model).__name__}; set {self.name}.layer to a layer with a spatial or token output. "
                f"Layers: {names[-12:]}"
            )
        return _walk_back_order(model), self.options.layer_input, "the last main-path convolution"

    def select_layer(self, model: nn.Module) -> tuple[str, nn.Module]:
        """The named layer, or auto's first choice (before the output shapes are known)."""
        modules = dict(model.named_modules())
        if self.options.layer == "auto":
            name = self._auto_candidates(model)[0][0]
            return name, modules[name]
        return self.options.layer, find_module(model, self.options.layer,
                                               conv_layers(model) + adapters.token_blocks(model) or None)

    def check_model(self, model: nn.Module) -> None:
        self.select_layer(model)

    def _probe(self, ctx: AutopsyContext, layers: dict[str, nn.Module], inputs: bool) -> dict[str, tuple[int, ...]]:
        """Output (or input) shapes of ``layers`` on the first samples: one forward pass."""
        shapes: dict[str, tuple[int, ...]] = {}

        def grab(n: str, _m: nn.Module, o: object) -> None:
            t = tensor_output(o)
            shapes.setdefault(n, tuple(t.shape) if t is not None else ())

        with torch.no_grad(), forward_hooks(layers, grab, inputs=inputs):
            ctx.model(ctx.x(slice(0, min(2, ctx.n))))
        return shapes

    def resolve_layer(self, ctx: AutopsyContext) -> tuple[str, nn.Module, dict[str, Any]]:
        """The layer (auto walks back past layers with one spatial/time position) and how its output becomes a map."""
        modules = dict(ctx.model.named_modules())
        notes: list[str] = []
        if self.options.layer != "auto":
            name, layer = self.select_layer(ctx.model)
            return name, layer, self.inspect(ctx, name, layer)
        names, use_input, why = self._auto_candidates(ctx.model)
        shapes = self._probe(ctx, {n: modules[n] for n in names}, use_input)
        usable = [n for n in names if len(shapes.get(n, ())) >= 3 and _extent(shapes[n], "channels_first") > 1]
        if not usable or len(names) == 1:
            usable = names[:1]
        name = usable[0]
        if name != names[0]:
            notes.append(f"layer auto: {names[0]!r} outputs {list(shapes.get(names[0], ()))[1:]}, a single spatial/"
                         f"time position (its map would be constant); walked back to {name!r}, the last convolution "
                         f"(or module of convolutions) with more than one position, output {list(shapes[name])[1:]}")
        else:
            notes.append(f"layer auto: {name!r}, {why}")
        info = self.inspect(ctx, name, modules[name], layer_input=use_input)
        info["notes"] = notes + info.get("notes", [])
        return name, modules[name], info

    def inspect(self, ctx: AutopsyContext, name: str, layer: nn.Module, layer_input: bool | None = None
                ) -> dict[str, Any]:
        """How the layer's output becomes a map: its layout and, for tokens, the prefix and grid."""
        use_input = self.options.layer_input if layer_input is None else layer_input
        shapes = self._probe(ctx, {name: layer}, use_input)
        candidates = conv_layers(ctx.model) + adapters.token_blocks(ctx.model)
        if name not in shapes:
            raise CerebroConfigError(f"{self.name}: layer {name!r} is not used in the model's forward pass; "
                                     f"candidates: {candidates}")
        shape = shapes[name]
        layout = self.options.layout
        if layout == "auto":
            layout = _layout(ctx.model, name, shape, self.name)
        if len(shape) < 3 or (layout == "tokens" and len(shape) != 3):
            raise CerebroConfigError(
                f"{self.name}: layer {name!r} outputs shape {shape or type(layer).__name__}, which has no spatial "
                f"or token axis (need (B, C, L), (B, C, H, W), (B, C, D, H, W) or tokens (B, N, D)); "
                f"candidates: {candidates}"
            )
        n_probe = min(2, ctx.n)
        if shape[0] != n_probe:
            raise CerebroConfigError(f"{self.name}: layer {name!r} outputs {shape} for a batch of {n_probe}: "
                                     "the batch is not its first axis (use batch_first=True transformer layers)")
        info: dict[str, Any] = {"layout": layout, "layer_input": use_input, "notes": [], "constant_by_design": None}
        if layout == "tokens":
            info["prefix"], info["grid"] = token_grid(shape[1], tuple(ctx.samples.input_shape),
                                                      self.options.prefix_tokens, self.options.grid,
                                                      adapters.prefix_tokens(ctx.model), owner=self.name)
            if not use_input and not self._reaches_output(ctx, layer, name, info):
                # Only the class token of this block reaches the head: its patch tokens have no gradient.
                info["layer_input"] = True
                if not self._reaches_output(ctx, layer, name, info):
                    raise CerebroConfigError(
                        f"{self.name}: neither the output nor the input of token layer {name!r} passes its patch "
                        f"tokens on to the explained score; name an earlier block in {self.name}.layer")
                info["notes"].append(
                    f"layer {name!r}: only its class token reaches the output (class-token readout), so its patch "
                    f"tokens have no gradient; the map uses its input instead (layer_input: true)")
        if _extent(shape, layout) - info.get("prefix", 0) <= 1:
            modules, order = dict(ctx.model.named_modules()), _walk_back_order(ctx.model)
            shapes = self._probe(ctx, {c: modules[c] for c in order}, False)
            better = [n for n in reversed(order)
                      if len(shapes.get(n, ())) >= 3 and _extent(shapes[n], "channels_first") > 1]
            info["constant_by_design"] = (
                f"layer {name!r} outputs a single spatial/time position {list(shape[1:])}: its map is constant by "
                f"construction; name a layer with a spatial extent"
                + (f", e.g. {better[-1]!r}" if better else ""))
        return info

    def _reaches_output(self, ctx: AutopsyContext, layer: nn.Module, name: str, info: dict[str, Any]) -> bool:
        sl = slice(0, min(2, ctx.n))
        return bool(self.token_tensors(ctx, layer, name, ctx.x(sl), ctx.forward_args(sl), info)[1].any())

    def record_layer(self, out: Any, state: dict[str, Any]) -> None:
        """The layer's metrics, notes (what auto chose and why, moves to the input) and constant-by-design flag."""
        out.metric("layer", state["name"])
        out.metric("layout", state["layout"])
        out.metric("layer_input", state["layer_input"])
        if state.get("notes"):
            out.metric("layer_notes", state["notes"])
        if state.get("constant_by_design"):
            out.flag(state["constant_by_design"])

    def token_tensors(self, ctx: AutopsyContext, layer: nn.Module, name: str, x: Tensor, args: tuple | None,
                      info: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Activations and gradients of a token layer as ``(B, D, *grid)`` maps (prefix tokens dropped), reshaped
        after the forward pass so that the layer still hands tokens to the next block. Works on float inputs and
        on token ids alike (ids carry no gradient: the layer's tensor is made a leaf that does)."""
        held: list[Tensor] = []

        def grad_leaf(t: Tensor) -> Tensor:
            t = t if t.requires_grad else t.detach().requires_grad_(True)
            held.append(t)
            return t

        def keep_out(_m: nn.Module, _i: tuple, o: object) -> object:
            return grad_leaf(o) if isinstance(o, Tensor) else None

        def keep_in(_m: nn.Module, i: tuple) -> tuple | None:
            return (grad_leaf(i[0]), *i[1:]) if i and isinstance(i[0], Tensor) else None

        x = x.clone().requires_grad_(True) if x.is_floating_point() else x
        handle = (layer.register_forward_pre_hook(keep_in) if info["layer_input"]
                  else layer.register_forward_hook(keep_out))
        try:
            with torch.enable_grad():
                scores = ctx.forward(x, *(args or ()))
        finally:
            handle.remove()
        if not held:
            raise CerebroConfigError(f"{self.name}: layer {name!r} handed on no tensor to capture")
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
