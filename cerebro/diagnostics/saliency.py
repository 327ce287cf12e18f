"""``saliency``: absolute input gradients of the target scalar.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image Classification Models and
Saliency Maps", ICLR workshop 2014 (arXiv:1312.6034).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from captum.attr import Saliency as CaptumSaliency
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions
from cerebro.registry import register_diagnostic

__all__ = ["Saliency"]


@dataclass
class SaliencyOptions(PrecisionOptions):
    #: Absolute value of the gradients (the classic saliency map); false keeps their sign.
    abs: bool = True


@register_diagnostic("saliency")
class Saliency(CaptumMethod):
    """Gradient of the target scalar with respect to each input value."""

    Options = SaliencyOptions
    method = CaptumSaliency
    #: one gradient per sample: on fast bf16/fp16 hardware the first chunk decides (side by side, maps within
    #: precision_tolerance of fp32)
    reduced_precision = True

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        return {"abs": self.options.abs}
