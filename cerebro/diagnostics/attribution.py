"""Base class of per-sample attribution diagnostics: blocks of samples, shared by the ranks of a DDP autopsy.

A subclass implements :meth:`start` (checks, once per rank), :meth:`blocks` (per-sample arrays for a range of
samples, one block at a time) and :meth:`finish` (metrics and figures, on rank 0 only). The big per-sample array
(``attributions``) is streamed to disk on rank 0 block by block; the small ones (one value per sample) are kept.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from matplotlib.figure import Figure

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.attribution import MapStats
from cerebro.engine.context import AutopsyContext
from cerebro.engine.store import RowTensor, RowWriter
from cerebro.report.overlays import sample_figure
from cerebro.report.writer import DiagnosticOutput

__all__ = ["AttributionDiagnostic"]

_DONE = "done"


class AttributionDiagnostic(Diagnostic):
    """Per-sample attributions computed block by block; under DDP each rank takes its share of the samples."""

    shardable: ClassVar[bool] = True
    #: Per-sample figures (input with its map) drawn for the first samples.
    sample_figures: ClassVar[int] = 4
    #: The maps change with the explained target (false for e.g. attention rollout); target randomization in
    #: ``sanity_checks`` applies only to target-dependent methods.
    target_dependent: ClassVar[bool] = True

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> Any:
        """Checks and set-up on every rank (e.g. the layer); returns a state passed to :meth:`blocks`."""
        return None

    def blocks(self, ctx: AutopsyContext, state: Any, samples: slice) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(first sample, {"attributions": (b, ...), other per-sample arrays (b,)})`` covering ``samples``."""
        raise NotImplementedError

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: Any, arrays: dict[str, np.ndarray],
               stats: MapStats, map_shape: tuple[int, ...]) -> None:
        """Metrics, flags and figures from every sample's small arrays and the maps' streamed statistics."""

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        comm = ctx.comm
        state, error = None, None
        try:
            state = self.start(ctx, out)
        except Exception as err:  # noqa: BLE001 - shared with the other ranks below, then raised everywhere
            error = err
        reason = comm.first_error(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None and comm.world == 1:
            raise error
        if reason is not None:
            raise RuntimeError(reason)
        writer: RowWriter | None = None
        small: dict[str, np.ndarray] = {}
        stats = MapStats()
        failures: list[str] = []
        rows_per_rank = [0] * comm.world
        source = self.blocks(ctx, state, comm.my_slice(ctx.n))
        finished = False
        try:
            while True:
                item: Any = _DONE
                if not finished:
                    try:
                        ctx.check_deadline()
                        item = next(source)
                    except StopIteration:
                        finished = True
                    except Exception as err:  # noqa: BLE001 - reported by rank 0; this rank stays in step
                        if comm.world == 1:
                            raise
                        finished, item = True, ("error", f"{type(err).__name__}: {err}", traceback.format_exc())
                gathered = comm.gather(item)
                if gathered is not None:  # rank 0: write every rank's block at its place
                    for rank, got in enumerate(gathered):
                        if isinstance(got, tuple) and got and got[0] == "error":
                            failures.append(f"rank {rank}: {got[1]}" if comm.world > 1 else got[1])
                        elif got != _DONE:
                            start, arrays = got
                            block = arrays.pop("attributions")
                            if writer is None:
                                writer = out.row_writer("attributions", (ctx.n, *block.shape[1:]))
                            writer.write(block, start=start)
                            rows_per_rank[rank] += block.shape[0]
                            stats.update(block)
                            for key, values in arrays.items():
                                small.setdefault(key, np.zeros((ctx.n, *values.shape[1:]), dtype=values.dtype))[
                                    start : start + len(values)] = values
                if all(comm.all_gather(finished)):
                    break
        finally:
            if writer is not None:
                writer.close()
        if not comm.is_main:
            return
        if failures:
            raise RuntimeError("; ".join(failures))
        assert writer is not None
        out.array("indices", ctx.samples.indices)
        if comm.world > 1:
            out.metric("samples_per_rank", rows_per_rank)
        self.finish(ctx, out, state, small, stats, writer.shape[1:])
        k = min(self.sample_figures, ctx.n)
        maps = RowTensor(writer.path)[0:k].numpy()
        inputs = ctx.samples.x[0:k].float().numpy()
        self._eeg = getattr(out.writer, "eeg", None)  # seconds and channel names on the sample figures' axes
        for i in range(k):
            out.figure(self.sample_view(inputs[i], maps[i], f"{self.name}, sample {int(ctx.samples.indices[i])}"),
                       f"sample{i}")

    def sample_view(self, x: np.ndarray, attr: np.ndarray, title: str) -> Figure:
        """One sample's figure (input ``x`` with its stored map ``attr``); maps not shaped like the input (e.g.
        frequency maps) override it."""
        return sample_figure(x, attr, title, getattr(self, "_eeg", None))
