"""Ranks of a multi-process (DDP) autopsy: which samples each rank takes, and gathering its results on rank 0.

Every collective here is called by every rank the same number of times, whatever fails where: a failure is sent as
a message, so no rank waits in a collective that another rank will never reach (a hang), and all collectives are
bounded by the process group's own timeout.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

__all__ = ["Comm", "SINGLE"]


class Comm:
    """``rank``/``world`` of the default process group (or a single process) and the few collectives we need."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @classmethod
    def current(cls) -> Comm:
        """The default process group when one is initialised, else a single process."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return SINGLE

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_slice(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` samples (shares differ by at most one sample, none overlap)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (``None`` elsewhere)."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def first_error(self, error: str | None) -> str | None:
        """The first rank's error message, on every rank (``None`` when every rank is fine)."""
        errors = self.all_gather(error)
        return next((f"rank {r}: {e}" if self.world > 1 else e for r, e in enumerate(errors) if e), None)


SINGLE = Comm()
