"""``smoothgrad``: Captum's NoiseTunnel over saliency or Integrated Gradients (SmoothGrad, SmoothGrad-squared,
VarGrad), seeded so the maps are reproducible.

Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017 (arXiv:1706.03825).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captum.attr import IntegratedGradients as CaptumIG, NoiseTunnel, Saliency as CaptumSaliency
from torch import Tensor

from cerebro.diagnostics.captum_method import CaptumMethod
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionOptions, PrecisionPlan, float32_plan
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic

__all__ = ["SmoothGrad"]

#: Why VarGrad stays float32: measured on braindecode EEGNeX (4 windows, 10 noisy copies), maps off float32's.
_VARGRAD_FP32 = ("nt_type vargrad subtracts nearly equal moments (E[g^2] - E[g]^2), which turns reduced precision's "
                 "rounding of each gradient into 7.8% (bf16) and 3.6% (fp16) of the map on EEGNeX, where smoothgrad "
                 "and smoothgrad_sq stay within 0.5%")


@dataclass
class SmoothGradOptions(PrecisionOptions):
    #: The method smoothed: saliency | integrated_gradients.
    base: str = field(default="saliency", metadata={"choices": ("saliency", "integrated_gradients")})
    #: smoothgrad (mean) | smoothgrad_sq (mean of squares) | vargrad (variance).
    nt_type: str = field(default="smoothgrad", metadata={"choices": ("smoothgrad", "smoothgrad_sq", "vargrad")})
    #: Noisy copies per input.
    nt_samples: int = field(default=10, metadata={"min": 1})
    #: Noise standard deviation, as a fraction of the sample set's value range (max - min over all inputs).
    noise_level: float = field(default=0.1, metadata={"min": 0.0})
    #: IG steps when base=integrated_gradients.
    n_steps: int = field(default=16, metadata={"min": 1})


@register_diagnostic("smoothgrad")
class SmoothGrad(CaptumMethod):
    """The average (or variance) of a gradient map over noisy copies of each input."""

    Options = SmoothGradOptions
    reduced_precision = True

    @property
    def cost(self) -> int:  # type: ignore[override]
        o = self.options
        return o.nt_samples * (o.n_steps if o.base == "integrated_gradients" else 1)

    def make(self, ctx: AutopsyContext) -> Any:
        fwd = ctx.grad_forward
        base = CaptumIG(fwd) if self.options.base == "integrated_gradients" else CaptumSaliency(fwd)
        return NoiseTunnel(base)

    def validate(self) -> None:
        o = self.options
        if o.nt_type == "vargrad" and o.precision not in ("auto", "fp32"):
            raise CerebroConfigError(f"`smoothgrad.precision: {o.precision}` with `smoothgrad.nt_type: vargrad`: "
                                     f"{_VARGRAD_FP32}. With vargrad, `smoothgrad.precision` can be one of "
                                     "['auto', 'fp32'] (auto runs float32 there)")

    def plan(self, ctx: AutopsyContext) -> PrecisionPlan | None:
        if self.options.nt_type != "vargrad":
            return super().plan(ctx)
        # no side-by-side chunk: it would only confirm the loss
        return float32_plan(self.options.precision, ctx.device, f"float32: {_VARGRAD_FP32}")

    def output_degree(self, state: dict[str, Any]) -> int | None:
        return 2 if self.options.nt_type in ("smoothgrad_sq", "vargrad") else 1  # squares scale as the square

    def start(self, ctx: AutopsyContext, out: Any) -> dict[str, Any]:
        lo, hi = float("inf"), float("-inf")
        for sl in ctx.chunks(256):
            x = ctx.samples.x[sl] if ctx.tokens is None else ctx.grad_x(sl)  # token ids: noise on embeddings
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        return {**super().start(ctx, out), "stdev": self.options.noise_level * max(hi - lo, 1e-12)}

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        o = self.options
        extra = {"n_steps": o.n_steps} if o.base == "integrated_gradients" else {"abs": True}
        return {"nt_type": o.nt_type, "nt_samples": o.nt_samples, "nt_samples_batch_size": o.nt_samples,
                "stdevs": state["stdev"], **extra}
