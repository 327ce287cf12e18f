"""``occlusion``: drop in the target scalar when a sliding window of the input is replaced by a constant.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014 (arXiv:1311.2901).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from captum.attr import Occlusion as CaptumOcclusion
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.context import AutopsyContext
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic

__all__ = ["Occlusion", "default_window"]


@dataclass
class OcclusionOptions:
    #: Window shape over one sample's input; null = 1 channel x T/20 samples for (C, T) signals, all channels x
    #: H/8 x W/8 for (C, H, W) images, 1 for flat features.
    window: Optional[List[int]] = None
    #: Step of the window; null = the window itself (no overlap).
    stride: Optional[List[int]] = None
    #: Value the occluded window takes (token-id inputs: tokens.baseline, a token id, instead).
    baseline: float = 0.0


def default_window(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 2:
        return (1, max(1, shape[1] // 20))
    if len(shape) == 3:
        return (shape[0], max(1, shape[1] // 8), max(1, shape[2] // 8))
    return (1,) * len(shape)


@register_diagnostic("occlusion")
class Occlusion(CaptumMethod):
    """Each input value gets the mean drop of the target scalar over the windows that covered it."""

    Options = OcclusionOptions
    method = CaptumOcclusion
    perturbation = True

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        shape = tuple(ctx.samples.input_shape)
        window = tuple(self.options.window) if self.options.window else default_window(shape)
        stride = tuple(self.options.stride) if self.options.stride else window
        for name, v in (("window", window), ("stride", stride)):
            if len(v) != len(shape) or any(w < 1 or w > s for w, s in zip(v, shape)):
                raise CerebroConfigError(f"occlusion.{name} {list(v)} does not fit the input shape {list(shape)}")
        out.metric("window", list(window))
        out.metric("stride", list(stride))
        return {**super().start(ctx, out), "window": window, "stride": stride,
                "replacement": self.replacement(ctx, self.options.baseline)}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {"sliding_window_shapes": state["window"], "strides": state["stride"],
                "baselines": state["replacement"]}
