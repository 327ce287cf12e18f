"""Base of the diagnostics that wrap one Captum attribution method on the target scalars.

Captum's method gets :class:`~cerebro.targets.ScalarForward` (one scalar per sample, so no ``target=``), the
per-sample target argument travels through ``additional_forward_args``, chunks follow the shared memory policy
(halved on CUDA out-of-memory), and the maps are streamed, checked for degeneracy and summarised like every
attribution diagnostic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.baselines import chunk_baseline, input_baseline
from cerebro.engine.budget import points_per_pass
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PrecisionPlan, autocast_for, record_precision
from cerebro.engine.rng import seeded
from cerebro.errors import CerebroConfigError
from cerebro.report.writer import DiagnosticOutput

__all__ = ["CaptumMethod"]


class CaptumMethod(AttributionDiagnostic):
    """Subclasses set :attr:`method` (a ``captum.attr`` class) and may override :meth:`kwargs` and :attr:`cost`."""

    method: ClassVar[type]
    #: Forward+backward passes one sample costs (e.g. samples of SmoothGrad); sizes the chunks.
    cost: ClassVar[int] = 1
    #: Maps are input-shaped (False for layer methods, whose maps :meth:`to_map` places on the input).
    input_maps: ClassVar[bool] = True
    #: The method integrates from (or differences against) ``options.baseline``: zeros | mean | a file. The
    #: baseline is built once in :meth:`baseline_state` and passed per chunk as ``baselines``.
    input_baseline: ClassVar[bool] = False
    #: The method perturbs the input (occlusion, ablation) instead of taking gradients: on token ids it stays on
    #: the ids and replaces tokens by ``tokens.baseline``; gradient methods attribute at the embedding output.
    perturbation: ClassVar[bool] = False
    #: Options carry ``precision`` (:class:`~cerebro.engine.precision.PrecisionOptions`): gradient methods with many
    #: points per sample, run in bf16/fp16 where that pays (:meth:`_side_by_side` decides on the first chunk).
    reduced_precision: ClassVar[bool] = False

    def make(self, ctx: AutopsyContext) -> Any:
        return self.method(ctx.forward if self.perturbation else ctx.grad_forward)

    def output_degree(self, state: dict[str, Any]) -> int | None:
        """Degree of the attributions in the scale of the forward function's output (1: linear, as gradients and
        IG; 2: squared), which fp16 loss scaling divides out; ``None`` where the method's gradients are not taken
        through the Captum method's ``forward_func`` (no loss scaling)."""
        return 1

    def inputs(self, ctx: AutopsyContext, sl: slice) -> Tensor:
        """What the method attributes for the samples ``sl``: the inputs, or on token ids (gradient methods)
        their embeddings."""
        return ctx.x(sl) if self.perturbation else ctx.grad_x(sl)

    def forward_args(self, ctx: AutopsyContext, sl: slice) -> tuple[Tensor, ...] | None:
        """``additional_forward_args`` matching :meth:`make`'s forward function."""
        return ctx.forward_args(sl) if self.perturbation else ctx.grad_args(sl)

    def replacement(self, ctx: AutopsyContext, value: float) -> float | int:
        """What a perturbation puts in place of removed inputs: ``value`` (the method's ``baseline`` option), or on
        token ids the ``tokens.baseline`` token id (never a float)."""
        if ctx.tokens is None:
            return value
        if value != 0.0:
            raise CerebroConfigError(f"{self.name}.baseline {value!r} is a float; on token ids removed tokens are "
                                     "replaced by tokens.baseline (pad | mask | <token id>): set that instead")
        return ctx.tokens.baseline_id(self.name)

    def kwargs(self, ctx: AutopsyContext, state: dict[str, Any], x: Tensor, sl: slice) -> dict[str, Any]:
        """Extra arguments of ``attribute`` for the chunk ``x`` (samples ``sl``); ``state`` is :meth:`start`'s."""
        return {}

    def samples_per_call(self, ctx: AutopsyContext) -> int:
        points = points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        return max(1, min(ctx.batch_size, points // max(1, self.cost)))

    def baseline_state(self, ctx: AutopsyContext) -> dict[str, Any]:
        """``{"baseline": (1 or N, *input)}`` for methods with an input baseline, else nothing."""
        if not self.input_baseline:
            return {}
        return {"baseline": input_baseline(ctx, self.options.baseline, self.name)}

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        return {"method": self.make(ctx), "per_call": self.samples_per_call(ctx), "plan": self.plan(ctx),
                **self.baseline_state(ctx)}

    def plan(self, ctx: AutopsyContext) -> PrecisionPlan | None:
        """The run's precision plan (methods with :attr:`reduced_precision`), else ``None`` (float32)."""
        return PrecisionPlan(self.options.precision, ctx.device) if self.reduced_precision else None

    def _attribute_in(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> Tensor:
        """:meth:`attribute` in the plan's precision (float32 without a plan); the first chunk of a plan with a
        reduced candidate runs in both (:meth:`_side_by_side`)."""
        plan: PrecisionPlan | None = state.get("plan")
        if plan is None:
            return self.attribute(ctx, state, sl)
        n = sl.stop - sl.start
        if plan.dtype is not None and not plan.measured:
            return self._side_by_side(ctx, state, sl, plan)

        return plan.planned(n, n * self.cost, lambda dtype: self._attribute_at(ctx, state, sl, dtype))

    def _attribute_at(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice, dtype: torch.dtype | None
                      ) -> Tensor:
        """:meth:`attribute` autocast to ``dtype``; fp16 with the plan's loss scale on the method's forward function
        (:class:`~cerebro.engine.loss_scale.LossScale`: fp16 gradients of wide inputs underflow unscaled)."""
        degree = self.output_degree(state)
        if dtype != torch.float16 or degree is None:
            with autocast_for(ctx.device, dtype):
                return self.attribute(ctx, state, sl)

        def run(value: float) -> Tensor:
            with _scaled_forward(state["method"], value), autocast_for(ctx.device, dtype):
                return self.attribute(ctx, state, sl)
        return state["plan"].loss_scale.scaled(run, degree)

    def _side_by_side(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice, plan: PrecisionPlan) -> Tensor:
        """The chunk in float32 (kept) and in reduced precision, same seed: speed per point and map distance."""
        n = sl.stop - sl.start

        def run(dtype: torch.dtype | None, part: slice = sl) -> Tensor:
            with seeded(ctx.seed + sl.start):
                return self._attribute_at(ctx, state, part, dtype).detach().float()
        a32, ared, t32, tred = plan.side_by_side(n, n * self.cost, run,
                                                 lambda d: run(d, slice(sl.start, sl.start + 1)))  # warm-up: 1 sample
        flat32, flat = a32.reshape(n, -1), ared.reshape(n, -1)
        err = ((flat - flat32).norm(dim=1) / flat32.norm(dim=1).clamp_min(1e-30)).nan_to_num(nan=float("inf"))
        plan.judge_maps(t32, tred, float(err.max()), self.options.precision_tolerance)
        return a32

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        policy = ChunkPolicy(state["per_call"], None, ctx.device, fixed=state["per_call"])  # halves on CUDA OOM
        start = samples.start
        while start < samples.stop:
            def one(size: int, first: int = start) -> Tensor:
                return self._attribute_in(ctx, state, slice(first, first + size))

            with seeded(ctx.seed + start):  # stochastic methods are reproducible; the user's RNG is untouched
                size, attr = policy.run(samples.stop - start, one)
            attr = attr.detach().float()
            maps = {"attributions": self.to_map(ctx, state, attr)}
            if ctx.tokens is not None and not self.perturbation and self.input_maps:
                maps = ctx.input_maps(attr)  # one value per token (B, T), plus (B, T, D) when asked
            yield start, {**{k: v.cpu().numpy() for k, v in maps.items()}, **self.extra_arrays(ctx, attr)}
            start += size

    def attribute(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> Tensor:
        """Attributions of the samples ``sl`` (one chunk)."""
        x = self.inputs(ctx, sl)
        base = {"baselines": chunk_baseline(state["baseline"], x, sl)} if self.input_baseline else {}
        return state["method"].attribute(x, additional_forward_args=self.forward_args(ctx, sl),
                                         **base, **self.kwargs(ctx, state, x, sl))

    def to_map(self, ctx: AutopsyContext, state: dict[str, Any], attr: Tensor) -> Tensor:
        """What is stored per sample: the attributions as they are (input-shaped), by default."""
        return attr

    def extra_arrays(self, ctx: AutopsyContext, attr: Tensor) -> dict[str, np.ndarray]:
        """More per-sample arrays saved next to the attributions (e.g. per-channel score drops)."""
        return {}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        for key, values in arrays.items():
            out.array(key, values)
        if state.get("plan") is not None:
            record_precision(out, state["plan"])
        for reason in stats.reasons():
            out.flag(reason)
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs, tuple(ctx.samples.input_shape), self.name.replace("_", " "))


@contextmanager
def _scaled_forward(method: Any, value: float) -> Iterator[None]:
    """Captum ``method`` (and the methods it wraps: NoiseTunnel's, LayerIntegratedGradients' inner IG) computing on
    ``forward_func(...) * value`` inside the block."""
    owners = [m for m in (method, getattr(method, "attribution_method", None), getattr(method, "ig", None))
              if m is not None and hasattr(m, "forward_func")]
    saved = [m.forward_func for m in owners]

    def scaling(f: Any) -> Any:
        return lambda *args, **kwargs: f(*args, **kwargs) * value

    try:
        for m, f in zip(owners, saved):
            m.forward_func = scaling(f)
        yield
    finally:
        for m, f in zip(owners, saved):
            m.forward_func = f
