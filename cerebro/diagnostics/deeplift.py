"""``deeplift``: DeepLIFT (Rescale rule) against a baseline.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation Differences", ICML 2017
(arXiv:1704.02685).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from captum.attr import DeepLift as CaptumDeepLift

from cerebro.diagnostics.captum_method import CaptumMethod
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
    input_baseline = True
