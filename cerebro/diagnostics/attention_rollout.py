"""``attention_rollout``: how attention flows from the input tokens to the output, through every attention layer.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020 (arXiv:2005.00928). Each layer's attention
``(B, heads, N, N)`` is fused over heads, mixed with the identity for the residual path (``(A + I) / 2``), row
normalised, and the layers are multiplied in forward order. The class token's row (or, without class tokens, the
mean over query tokens) gives one weight per patch token, placed on the token grid and upsampled onto the input.

Weights come from the attention modules themselves, found and switched for one pass by the model's families
(:mod:`cerebro.adapters`): ``nn.MultiheadAttention`` is asked for per-head weights (PyTorch's fused fast path off),
Hugging Face models run with ``attn_implementation="eager"`` and ``output_attentions=True`` (their default SDPA
kernel computes no weights), timm attention with ``fused_attn = False`` (the probabilities are read at
``attn_drop``); everything is restored afterwards. Other modules can be named in ``modules`` when their output, or
an element of their output tuple, is ``(B, heads, N, N)`` or ``(B, N, N)``. Rollout does not depend on the target:
it is the same for every class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro import adapters
from cerebro.diagnostics.layers import map_onto_input, token_grid
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["AttentionRollout", "rollout", "attention_modules"]


@dataclass
class AttentionRolloutOptions:
    #: Attention modules, in forward order: null = every nn.MultiheadAttention and every module named *attn_drop;
    #: or a list of dotted names whose output (or an element of their output tuple) is (B, heads, N, N) weights.
    modules: Optional[List[str]] = None
    #: How the heads of a layer are combined: mean (Abnar & Zuidema), max or min.
    head_fusion: str = field(default="mean", metadata={"choices": ("mean", "max", "min")})
    #: Fraction of each layer's weakest attention weights set to zero before the rollout (0 keeps them all).
    discard_ratio: float = field(default=0.0, metadata={"min": 0.0})
    #: Add the identity for the residual connection ((A + I) / 2) before renormalising rows.
    residual: bool = True
    #: Which row of the rolled-out matrix is the map: class_token (needs prefix tokens), mean (over all query
    #: tokens), or auto (class_token when the model has class tokens, else mean).
    source: str = field(default="auto", metadata={"choices": ("auto", "class_token", "mean")})
    #: Class/register tokens before the patch tokens; null = from the model's cls/register token parameters.
    prefix_tokens: Optional[int] = field(default=None, metadata={"min": 0})
    #: The patch grid, e.g. [14, 14] or [25]; null = square grid for images, 1-D for signals.
    grid: Optional[List[int]] = None


def attention_modules(model: nn.Module, names: list[str] | None) -> dict[str, nn.Module]:
    """The modules whose attention weights are captured, by name, in registration order."""
    if names is not None:
        return {n: find_module(model, n) for n in names}
    found = adapters.attention_modules(model)
    if not found:
        raise CerebroConfigError(
            f"attention_rollout: {type(model).__name__} has no nn.MultiheadAttention and no module named *attn_drop, "
            "and no Hugging Face or timm attention; name the modules whose output is the attention probabilities "
            f"(B, heads, N, N) in attention_rollout.modules ({adapters.weights_hint(model)})")
    return found


def _root(t: Tensor) -> tuple[int, int, tuple[int, ...]]:
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)


@contextmanager
def _capture(model: nn.Module, modules: dict[str, nn.Module], sink: list[tuple[str, Tensor | None]]) -> Iterator[None]:
    """Record each module's attention weights per call, with the model's families switched to attention that
    exposes them (eager attention, unfused kernels, need_weights) for the pass and restored afterwards."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda m, _i, o, _n=name: sink.append(
                    (_n, None if (w := adapters.attention_weights(model, m, o)) is None else w.detach()))))
        with adapters.attention_pass(model):
            yield
    finally:
        for h in handles:
            h.remove()


def rollout(layers: list[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0,
            residual: bool = True) -> Tensor:
    """Attention rollout ``A_L ... A_1`` of per-layer ``(B, H, N, N)`` weights, as a ``(B, N, N)`` matrix."""
    joint: Tensor | None = None
    for w in layers:
        a = {"mean": w.mean(1), "max": w.amax(1), "min": w.amin(1)}[head_fusion].double()
        if discard_ratio > 0:
            flat = a.flatten(1)
            k = int(flat.shape[1] * discard_ratio)
            if k:
                low = flat.topk(k, dim=1, largest=False).indices
                flat = flat.scatter(1, low, 0.0)
            a = flat.view_as(a)
        if residual:
            a = (a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)) / 2
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        joint = a if joint is None else a @ joint
    assert joint is not None
    return joint


@register_diagnostic("attention_rollout")
class AttentionRollout(AttributionDiagnostic):
    """Attention rollout maps ``(N, 1, *spatial)`` on the input's grid (one per sample; target-independent)."""

    Options = AttentionRolloutOptions
    target_dependent = False

    def validate(self) -> None:
        if self.options.discard_ratio >= 1:
            raise CerebroConfigError(f"`attention_rollout.discard_ratio` must be in [0, 1), got "
                                     f"{self.options.discard_ratio}")

    def check_model(self, model: nn.Module) -> None:
        attention_modules(model, self.options.modules)

    def _layers(self, ctx: AutopsyContext, modules: dict[str, nn.Module], sl: slice) -> list[Tensor]:
        sink: list[tuple[str, Tensor | None]] = []
        with torch.no_grad(), _capture(ctx.model, modules, sink):
            ctx.model(ctx.x(sl))
        # nested attention modules (e.g. ViTAttention around ViTSelfAttention) hand on the same tensor: keep it once
        seen: set[tuple[int, int, tuple[int, ...]]] = set()
        sink = [(n, w) for n, w in sink if w is None or not (_root(w) in seen or seen.add(_root(w)))]
        missing = sorted({n for n, w in sink if w is None})
        if (missing and self.options.modules is not None) or not any(w is not None for _, w in sink):
            raise CerebroConfigError(
                f"attention_rollout: {missing or sorted(modules)} returned no (B, heads, N, N) attention weights "
                "in the forward pass (not called, or their output holds no square weight matrix); name the modules "
                "whose output is the attention probabilities in attention_rollout.modules, or make the model expose "
                f"them ({adapters.weights_hint(ctx.model)})")
        sizes = sorted({tuple(w.shape[-2:]) for _, w in sink if w is not None})
        if len(sizes) > 1:
            raise CerebroConfigError(f"attention_rollout: attention maps of different sizes {sizes}; rollout needs "
                                     "one token sequence through every layer (pick the modules with `modules`)")
        return [w for _, w in sink if w is not None]

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        modules = attention_modules(ctx.model, self.options.modules)
        layers = self._layers(ctx, modules, slice(0, min(2, ctx.n)))
        n_tokens = int(layers[0].shape[-1])
        prefix, grid = token_grid(n_tokens, tuple(ctx.samples.input_shape), self.options.prefix_tokens,
                                  self.options.grid, adapters.prefix_tokens(ctx.model), owner=self.name)
        source = self.options.source
        if source == "auto":
            source = "class_token" if prefix > 0 else "mean"
        if source == "class_token" and prefix == 0:
            raise CerebroConfigError("attention_rollout: source=class_token but the model has no class token; "
                                     "use source: mean or set prefix_tokens")
        return {"modules": modules, "n_layers": len(layers), "heads": int(layers[0].shape[1]), "tokens": n_tokens,
                "prefix": prefix, "grid": grid, "source": source, "per_call": max(1, ctx.batch_size)}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        o = self.options
        for start in range(samples.start, samples.stop, state["per_call"]):
            sl = slice(start, min(samples.stop, start + state["per_call"]))
            joint = rollout(self._layers(ctx, state["modules"], sl), o.head_fusion, o.discard_ratio, o.residual)
            p = state["prefix"]
            rows = joint[:, 0, p:] if state["source"] == "class_token" else joint[:, :, p:].mean(1)
            grid = rows.float().reshape(rows.shape[0], 1, *state["grid"])
            yield start, {"attributions": map_onto_input(grid, tuple(ctx.samples.input_shape)).cpu().numpy()}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        out.metric("attention_layers", state["n_layers"])
        out.metric("attention_modules", sorted(state["modules"]))
        out.metric("heads", state["heads"])
        out.metric("prefix_tokens", state["prefix"])
        out.metric("token_grid", list(state["grid"]))
        out.metric("source", state["source"])
        out.metric("target_independent", True)
        out.metric("map_shape", map_shape)
        for reason in stats.reasons():
            out.flag(reason)
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs[0], tuple(ctx.samples.input_shape), "attention rollout")
