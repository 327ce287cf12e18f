"""``feature_ablation``, ``channel_ablation``, ``temporal_ablation``: the drop in the target scalar when a group of
input values (one feature, one EEG channel, one time window) is replaced by a baseline value.

Captum's FeatureAblation with a feature mask per grouping. The per-group drops are also saved compactly:
``channel_drop.npy`` (N, C) and ``time_drop.npy`` (N, windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.attr import FeatureAblation
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.attribution import MapStats
from cerebro.engine.budget import points_per_pass
from cerebro.engine.context import AutopsyContext
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic
from cerebro.report.figures import bar
from cerebro.report.writer import DiagnosticOutput

__all__ = ["FeatureAblationDiagnostic", "ChannelAblation", "TemporalAblation"]


@dataclass
class AblationOptions:
    #: Value an ablated group takes (token-id inputs: tokens.baseline, a token id, instead).
    baseline: float = 0.0


@dataclass
class TemporalAblationOptions:
    #: Value an ablated window takes.
    baseline: float = 0.0
    #: Samples per time window.
    window: int = field(default=10, metadata={"min": 1})


class _Ablation(CaptumMethod):
    method = FeatureAblation
    perturbation = True

    def mask(self, shape: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        mask = self.mask(tuple(ctx.samples.input_shape))
        points = points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        return {**super().start(ctx, out), "mask": mask, "groups": int(mask.max()) + 1, "points": points,
                "replacement": self.replacement(ctx, self.options.baseline)}

    def samples_per_call(self, ctx: AutopsyContext) -> int:
        return max(1, ctx.batch_size)

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        # Perturbed copies evaluated together: as many as the memory budget allows for this chunk (forward only).
        per_eval = max(1, min(state["groups"], 2 * state["points"] // max(1, x.shape[0])))
        return {"feature_mask": state["mask"].to(x.device).unsqueeze(0), "baselines": state["replacement"],
                "perturbations_per_eval": per_eval}


@register_diagnostic("feature_ablation")
class FeatureAblationDiagnostic(_Ablation):
    """Every input value ablated on its own (inputs of at most 4096 values; use channel/temporal ablation or
    occlusion for larger inputs)."""

    Options = AblationOptions

    def mask(self, shape: tuple[int, ...]) -> Tensor:
        n = int(np.prod(shape))
        if n > 4096:
            raise CerebroConfigError(f"feature_ablation ablates each of the {n} input values separately; use "
                                     "channel_ablation, temporal_ablation or occlusion for inputs over 4096 values")
        return torch.arange(n).reshape(shape)


class _SignalAblation(_Ablation):
    axis: str = ""

    def mask(self, shape: tuple[int, ...]) -> Tensor:
        if len(shape) != 2:
            raise CerebroConfigError(f"{self.name} needs (channels, time) inputs, got samples of shape {list(shape)}")
        return self.signal_mask(*shape)

    def signal_mask(self, c: int, t: int) -> Tensor:
        raise NotImplementedError

    def group_values(self, attr: Tensor, groups: int) -> Tensor:
        raise NotImplementedError

    def extra_arrays(self, ctx: AutopsyContext, attr: Tensor) -> dict[str, np.ndarray]:
        return {f"{self.axis}_drop": self.group_values(attr.detach().float(), 0).cpu().numpy()}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        super().finish(ctx, out, state, arrays, stats, map_shape)
        drop = arrays[f"{self.axis}_drop"].mean(axis=0)
        out.metric(f"mean_{self.axis}_drop", drop)
        out.metric(f"top_{self.axis}s", np.argsort(-np.abs(drop))[:10])
        out.figure(bar([str(i) for i in range(drop.size)], drop, f"{self.name}: mean drop of the score per {self.axis}",
                       "f(x) - f(x with group ablated)"), "drop")


@register_diagnostic("channel_ablation")
class ChannelAblation(_SignalAblation):
    """Drop of the score when one EEG channel is replaced by the baseline value (all its time samples)."""

    Options = AblationOptions
    axis = "channel"

    def signal_mask(self, c: int, t: int) -> Tensor:
        return torch.arange(c).reshape(c, 1).expand(c, t).contiguous()

    def group_values(self, attr: Tensor, groups: int) -> Tensor:
        return attr[:, :, 0]


@register_diagnostic("temporal_ablation")
class TemporalAblation(_SignalAblation):
    """Drop of the score when one time window (all channels) is replaced by the baseline value."""

    Options = TemporalAblationOptions
    axis = "time"

    def signal_mask(self, c: int, t: int) -> Tensor:
        return (torch.arange(t) // self.options.window).reshape(1, t).expand(c, t).contiguous()

    def group_values(self, attr: Tensor, groups: int) -> Tensor:
        return attr[:, 0, :: self.options.window]
