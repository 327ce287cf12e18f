"""Base of the diagnostics that wrap one Captum attribution method on the target scalars.

Captum's method gets :class:`~cerebro.targets.ScalarForward` (one scalar per sample, so no ``target=``), the
per-sample target argument travels through ``additional_forward_args``, chunks follow the shared memory policy
(halved on CUDA out-of-memory), and the maps are streamed, checked for degeneracy and summarised like every
attribution diagnostic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.engine.attribution import MapStats, summarize_maps
from cerebro.engine.baselines import chunk_baseline, make_baseline
from cerebro.engine.budget import points_per_pass
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.engine.rng import seeded
from cerebro.report.writer import DiagnosticOutput

__all__ = ["CaptumMethod"]


class CaptumMethod(AttributionDiagnostic):
    """Subclasses set :attr:`method` (a ``captum.attr`` class) and may override :meth:`kwargs` and :attr:`cost`."""

    method: ClassVar[type]
    #: Forward+backward passes one sample costs (e.g. samples of SmoothGrad); sizes the chunks.
    cost: ClassVar[int] = 1
    #: The method integrates from (or differences against) ``options.baseline``: zeros | mean | a file. The
    #: baseline is built once in :meth:`baseline_state` and passed per chunk as ``baselines``.
    input_baseline: ClassVar[bool] = False

    def make(self, ctx: AutopsyContext) -> Any:
        return self.method(ctx.forward)

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
        return {"baseline": make_baseline(self.options.baseline, ctx.samples.x, owner=self.name)}

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        return {"method": self.make(ctx), "per_call": self.samples_per_call(ctx), **self.baseline_state(ctx)}

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        policy = ChunkPolicy(state["per_call"], None, ctx.device, fixed=state["per_call"])  # halves on CUDA OOM
        start = samples.start
        while start < samples.stop:
            def one(size: int, first: int = start) -> Tensor:
                return self.attribute(ctx, state, slice(first, first + size))

            with seeded(ctx.seed + start):  # stochastic methods are reproducible; the user's RNG is untouched
                size, attr = policy.run(samples.stop - start, one)
            attr = attr.detach().float()
            yield start, {"attributions": self.to_map(ctx, state, attr).cpu().numpy(), **self.extra_arrays(ctx, attr)}
            start += size

    def attribute(self, ctx: AutopsyContext, state: dict[str, Any], sl: slice) -> Tensor:
        """Attributions of the samples ``sl`` (one chunk)."""
        x = ctx.x(sl)
        base = {"baselines": chunk_baseline(state["baseline"], x, sl)} if self.input_baseline else {}
        return state["method"].attribute(x, additional_forward_args=ctx.forward_args(sl),
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
        for reason in stats.reasons():
            out.flag(reason)
        mean_abs = stats.mean_abs()
        out.array("mean_abs_attribution", mean_abs)
        summarize_maps(out, mean_abs, tuple(ctx.samples.input_shape), self.name.replace("_", " "))
