"""``input_x_gradient``: input times its gradient.

Shrikumar et al., "Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
2016 (arXiv:1605.01713).
"""

from __future__ import annotations

from captum.attr import InputXGradient as CaptumInputXGradient

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.precision import PrecisionOptions
from cerebro.registry import register_diagnostic

__all__ = ["InputXGradient"]


@register_diagnostic("input_x_gradient")
class InputXGradient(CaptumMethod):
    """Each input value times the gradient of the target scalar with respect to it."""

    Options = PrecisionOptions
    method = CaptumInputXGradient
    #: one gradient per sample: on fast bf16/fp16 hardware the first chunk decides (side by side, maps within
    #: precision_tolerance of fp32)
    reduced_precision = True
