"""How many forward+backward points one pass takes: bounded by the memory budget, chosen by measured throughput.

Small chunks are often faster on CPU (activations stay in cache), large ones on GPUs. The first chunks of the real
work are run at a few candidate sizes and timed; the fastest size is kept for the rest of the run and cached for
the next run with the same model class, input shape and device (no work is spent on calibration alone). A CUDA
out-of-memory error halves the chunk and retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["ChunkPolicy", "clear_cache"]

T = TypeVar("T")
_CACHE: dict[tuple[Any, ...], int] = {}


def clear_cache() -> None:
    """Forget calibrated chunk sizes (tests, benchmarks)."""
    _CACHE.clear()


def _candidates(limit: int) -> list[int]:
    """Sizes tried in order: small first (cheap, and often fastest on CPU caches), up to the memory limit."""
    sizes = [s for s in (4, 8, 16, 32, 64, 128, 256, 512, 1024) if s < limit]
    return [*sizes, limit] if limit <= 1024 else sizes + [min(limit, 2048)]


class ChunkPolicy:
    """Chunk sizes for a stream of points: calibrates online, then fixed; halves on CUDA OOM.

    Args:
        limit: most points one pass may hold (from the memory budget).
        key: cache key (model class, input shape, device, dtype...); ``None`` disables the cache.
        device: the device the passes run on (timing synchronises CUDA only while calibrating).
        fixed: a user-chosen size (no calibration).
    """

    def __init__(self, limit: int, key: tuple[Any, ...] | None, device: torch.device, fixed: int | None = None) -> None:
        self.limit = max(1, int(limit))
        self.key = key
        self.device = device
        self.chosen: int | None = fixed or (_CACHE.get(key) if key is not None else None)
        if self.chosen is not None:
            self.chosen = min(self.chosen, self.limit)
        self._trials = [] if self.chosen is not None else _candidates(self.limit)
        self._timings: dict[int, float] = {}
        self.oom_halvings = 0

    def next_size(self, remaining: int) -> int:
        """Size of the next chunk (never more than ``remaining``)."""
        size = self._trials[0] if self._trials else (self.chosen or self.limit)
        return max(1, min(size, remaining, self.limit))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, remaining: int, fn: Callable[[int], T]) -> tuple[int, T]:
        """Run ``fn(size)`` on the next chunk; returns ``(size, result)``. Retries with half the size on CUDA OOM."""
        while True:
            size = self.next_size(remaining)
            timing = bool(self._trials) and size == self._trials[0]
            try:
                if timing:
                    self._sync()
                    t0 = time.perf_counter()
                result = fn(size)
                if timing:
                    self._sync()
                    self._record(size, time.perf_counter() - t0)
                return size, result
            except torch.cuda.OutOfMemoryError:
                if size <= 1:
                    raise
                torch.cuda.empty_cache()
                self.limit = max(1, size // 2)
                self.oom_halvings += 1
                self._trials = [s for s in self._trials if s <= self.limit]
                if self.chosen is not None:
                    self.chosen = min(self.chosen, self.limit)

    def _record(self, size: int, seconds: float) -> None:
        self._timings[size] = size / max(seconds, 1e-9)
        self._trials.pop(0)
        best = max(self._timings, key=self._timings.__getitem__)
        # Stop trying larger sizes once throughput fell clearly below the best seen so far.
        if self._trials and self._timings[size] < 0.9 * self._timings[best]:
            self._trials = []
        if not self._trials:
            self.chosen = best
            if self.key is not None:
                _CACHE[self.key] = best

    def rates(self, min_size: int = 1) -> dict[int, float]:
        """Throughput (points per second) measured while calibrating, per chunk size of at least ``min_size`` points
        (empty where none was measured: a fixed or cached size times nothing)."""
        return {k: v for k, v in self._timings.items() if k >= min_size}

    def describe(self) -> dict[str, Any]:
        return {"chunk_points": self.chosen, "limit_points": self.limit, "oom_halvings": self.oom_halvings,
                "calibration_points_per_s": {str(k): round(v, 2) for k, v in self._timings.items()}}
