"""``deeplift``: DeepLIFT (Rescale rule) against a baseline.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation Differences", ICML 2017
(arXiv:1704.02685).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captum.attr import DeepLift as CaptumDeepLift
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod, chunk_baseline
from cerebro.diagnostics.integrated_gradients import make_baseline
from cerebro.engine.context import AutopsyContext
from cerebro.registry import register_diagnostic

__all__ = ["DeepLift"]


@dataclass
class DeepLiftOptions:
    #: zeros | mean (the sample set's mean input) | a path to a .npy/.pt file of shape input or (N, *input).
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean"), "path_ok": True})


@register_diagnostic("deeplift")
class DeepLift(CaptumMethod):
    """Contribution of each input to the difference of the target scalar from its value at the baseline."""

    Options = DeepLiftOptions
    method = CaptumDeepLift

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        return {**super().start(ctx, out), "baseline": make_baseline(self.options.baseline, ctx.samples.x)}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        base = state["baseline"]
        return {"baselines": chunk_baseline(base, x, sl)}
