"""``gradients``: per-parameter gradient norms of the module's loss on the samples, with vanishing/exploding flags."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.context import AutopsyContext, find_module_loss
from cerebro.errors import DiagnosticSkipped
from cerebro.registry import register_diagnostic
from cerebro.report.figures import bar
from cerebro.report.writer import DiagnosticOutput

__all__ = ["Gradients"]

_LOSS = ("auto", "module", "default", "target")


@dataclass
class GradientsOptions:
    #: auto: the module's own loss attribute (loss_fn/criterion/...), else MSE/cross-entropy on labels, else the target.
    loss: str = field(default="auto", metadata={"choices": _LOSS})
    #: Parameters whose gradient norm is below this are flagged as vanishing.
    vanishing: float = field(default=1e-7, metadata={"min": 0.0})
    #: Parameters whose gradient norm is above this are flagged as exploding.
    exploding: float = field(default=1e3, metadata={"min": 0.0})


def _like(y: Tensor | None, o: Tensor) -> Tensor | None:
    """Labels ``(B,)`` against outputs ``(B, 1)`` (or the reverse) take the output's shape: MSELoss would broadcast
    them to ``(B, B)`` and compute a wrong loss. Classification labels (fewer elements than logits) stay as they are."""
    if y is not None and y.shape != o.shape and y.numel() == o.numel() and y.is_floating_point():
        return y.reshape(o.shape)
    return y


def _adds_up(fn, o: Tensor, y: Tensor | None, both: float) -> bool:  # noqa: ANN001
    """Whether the loss of two samples is the sum (not the mean) of their losses: a sum-reduced loss."""
    parts = float(fn(o[:1], y[:1] if y is not None else y)) + float(fn(o[1:2], y[1:2] if y is not None else y))
    return abs(both - parts) <= 1e-5 * max(1.0, abs(parts)) and abs(parts) > 1e-12


@register_diagnostic("gradients")
class Gradients(Diagnostic):
    """Backpropagates the mean loss over the samples (in chunks, exactly) and reports each parameter's gradient norm."""

    Options = GradientsOptions

    def _loss_fn(self, ctx: AutopsyContext, out: DiagnosticOutput):  # noqa: ANN202
        choice = self.options.loss
        module_loss = find_module_loss(ctx.model)
        if choice in ("auto", "module") and module_loss is not None and ctx.has_labels:
            attr, fn = module_loss
            sl = slice(0, min(ctx.n, 2))
            try:
                with torch.no_grad():
                    o = ctx.model(ctx.x(sl))
                    y = _like(ctx.y(sl), o)
                    value = fn(o, y)
                    if not (isinstance(value, Tensor) and value.numel() == 1):
                        raise TypeError(f"returned {type(value).__name__} of shape {getattr(value, 'shape', None)}, "
                                        "not a scalar")
                    self._sum_reduced = o.shape[0] > 1 and _adds_up(fn, o, y, float(value))
                return f"module.{attr}", lambda o, y: fn(o, _like(y, o))
            except Exception as err:  # noqa: BLE001 - recorded, and 'module' asked explicitly is an error
                if choice == "module":
                    raise RuntimeError(f"the module's loss `{attr}` failed on a batch: {err}") from err
                out.flag(f"module loss `{attr}` unusable ({err}); used the default loss")
        elif choice == "module":
            raise RuntimeError("loss=module but the module has no loss_fn/criterion/loss_function attribute, or no labels")
        if choice in ("auto", "default") and ctx.has_labels and ctx.target.supervised:
            return f"default_{ctx.target.kind}", lambda o, y: ctx.target.per_sample_loss(o, y).mean()
        if choice == "default":
            raise RuntimeError("loss=default needs labels in the batches and a regression/classification target")
        return "target", lambda o, y: ctx.target.select(o, None).mean()

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        self._sum_reduced = False
        source, loss_fn = self._loss_fn(ctx, out)
        out.metric("loss_reduction", "sum" if self._sum_reduced else "mean")
        params = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        frozen = sum(1 for _, p in ctx.model.named_parameters() if not p.requires_grad)
        if not params:
            raise DiagnosticSkipped(f"no trainable parameters ({frozen} frozen with requires_grad=False): "
                                    "no gradients to measure")
        for _, p in params:
            p.grad = None
        total_loss = torch.zeros((), device=ctx.device, dtype=torch.float64)  # summed on the device: no sync per chunk
        try:
            with torch.enable_grad():
                for sl in ctx.chunks():
                    y = ctx.y(sl)
                    if source == "target":
                        loss = ctx.forward(ctx.x(sl), *(ctx.forward_args(sl) or ())).mean()
                    else:
                        loss = loss_fn(ctx.model(ctx.x(sl)), y)
                    # Chunks of a mean-reduced loss are weighted by their share; a sum-reduced loss adds up as is.
                    weight = 1.0 if self._sum_reduced else (sl.stop - sl.start) / ctx.n
                    (loss * weight).backward()
                    total_loss += loss.detach().double() * weight
            names = [n for n, _ in params]
            grad_norms = np.array([float(p.grad.norm()) if p.grad is not None else 0.0 for _, p in params])
            param_norms = np.array([float(p.detach().norm()) for _, p in params])
        finally:
            for _, p in params:
                p.grad = None
        out.metric("loss_source", source)
        out.metric("loss", float(total_loss))
        out.metric("total_grad_norm", float(np.sqrt(np.sum(grad_norms**2))))
        out.metric("frozen_parameters", frozen)
        out.metric("per_parameter", {
            n: {"grad_norm": g, "param_norm": w, "ratio": g / w if w > 0 else None}
            for n, g, w in zip(names, grad_norms, param_norms)
        })
        out.array("grad_norms", grad_norms)
        if not np.all(np.isfinite(grad_norms)):
            out.flag("non-finite gradients: " + ", ".join(n for n, g in zip(names, grad_norms) if not np.isfinite(g)))
        for n, g in zip(names, grad_norms):
            if g < self.options.vanishing:
                out.flag(f"vanishing gradient: {n} (norm {g:.2e})")
            elif g > self.options.exploding:
                out.flag(f"exploding gradient: {n} (norm {g:.2e})")
        if names:
            out.figure(bar(names, np.maximum(grad_norms, 1e-30), f"gradient norm per parameter ({source} loss)",
                           "gradient L2 norm", log=True))
