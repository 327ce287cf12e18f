"""``deeplift``: DeepLIFT (Rescale rule) against a baseline.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation Differences", ICML 2017
(arXiv:1704.02685).

Captum applies the Rescale rule only to the nonlinear module types it lists (``SUPPORTED_NON_LINEAR``: ReLU, ELU,
LeakyReLU, Sigmoid, Tanh, Softplus, max pooling, Softmax); any other nonlinearity (Hardswish, SiLU/Swish, GELU, Mish,
...) passes its plain gradient, and the attributions no longer add up to ``f(x) - f(baseline)``. Completeness is
measured on every run; a model with such modules gets a flag that names them and the measured error.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from captum.attr import DeepLift as CaptumDeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import nn

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.diagnostics.completeness import CompletenessCheck
from cerebro.engine.context import AutopsyContext
from cerebro.registry import register_diagnostic

__all__ = ["DeepLift", "unsupported_nonlinearities"]

#: torch.nn modules that are linear or structural although they live in ``torch.nn.modules.activation``.
_NOT_NONLINEAR = (nn.MultiheadAttention, nn.Identity)
#: Third-party activation modules (HF ``GELUActivation``, timm's ``GELUTanh``/``Swish``, ...), matched by class name.
_ACTIVATION_NAME = re.compile(r"gelu|silu|swish|mish|hardswish|hardsigmoid|quickgelu|selu|celu|softsign|sin\b", re.I)


def unsupported_nonlinearities(model: nn.Module) -> dict[str, int]:
    """Nonlinear modules of ``model`` that Captum's DeepLift does not apply its rule to: ``{type name: count}``."""
    found: Counter[str] = Counter()
    for module in model.modules():
        t = type(module)
        if t in SUPPORTED_NON_LINEAR or isinstance(module, _NOT_NONLINEAR) or any(True for _ in module.children()):
            continue
        if t.__module__ == "torch.nn.modules.activation" or _ACTIVATION_NAME.search(t.__name__):
            found[t.__name__] += 1
    return dict(found)


@dataclass
class DeepLiftOptions:
    #: zeros | mean (the sample set's mean input) | a path to a .npy/.pt file of shape input or (N, *input).
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean"), "path_ok": True})


@register_diagnostic("deeplift")
class DeepLift(CompletenessCheck, CaptumMethod):
    """Contribution of each input to the difference of the target scalar from its value at the baseline."""

    Options = DeepLiftOptions
    method = CaptumDeepLift
    input_baseline = True

    def completeness_flag(self, ctx: AutopsyContext, metrics: dict[str, Any]) -> str | None:
        found = unsupported_nonlinearities(ctx.model)
        if not found:
            return super().completeness_flag(ctx, metrics)
        median = metrics["completeness_median_relative_error"]
        measured = "not measured" if median is None else (
            f"measured completeness error: median {median:.3g}, max {metrics['completeness_max_relative_error']:.3g}")
        names = ", ".join(f"{n} (x{k})" for n, k in sorted(found.items()))
        return (f"deeplift: Captum's DeepLift rule does not hold on {names}: these nonlinearities get plain gradients, "
                f"so the attributions need not sum to f(x) - f(baseline) ({measured}); use integrated_gradients for "
                "this model")
