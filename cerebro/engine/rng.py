"""Random state: the autopsy leaves the user's torch, numpy and python random states exactly as it found them, and
stochastic attribution methods (GradientShap draws with numpy, NoiseTunnel with torch) are seeded."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["preserved_rng", "seeded"]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch (CPU and every CUDA device), numpy and python random states on exit."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and python for the block; the previous states come back afterwards."""
    with preserved_rng():
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
