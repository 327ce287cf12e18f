"""Memory policy: how many forward+backward points fit in one pass under a memory budget."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cerebro.engine.hooks import forward_hooks, leaf_modules, tensor_output

__all__ = ["default_budget_bytes", "bytes_per_point", "points_per_pass", "chunks"]

_CPU_BUDGET = 1 << 30  # 1 GiB of activations per pass on CPU keeps caches warm and memory flat


def default_budget_bytes(device: torch.device) -> int:
    """Half the free memory of a CUDA device, or 1 GiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return _CPU_BUDGET


def bytes_per_point(model: nn.Module, x1: Tensor) -> int:
    """Activation bytes one sample costs in a forward+backward pass (outputs of every layer, x2 for gradients)."""
    total = [x1[:1].numel() * x1.element_size()]

    def add(_n: str, _m: nn.Module, out: object) -> None:
        t = tensor_output(out)
        if t is not None:
            total[0] += t[:1].numel() * t.element_size() if t.ndim else t.element_size()

    with torch.no_grad(), forward_hooks(leaf_modules(model), add):
        model(x1[:1])
    return 2 * total[0]


def points_per_pass(model: nn.Module, x1: Tensor, budget_bytes: int) -> int:
    """Number of samples (or interpolation points) one forward+backward pass may hold within ``budget_bytes``."""
    return max(1, int(budget_bytes // max(1, bytes_per_point(model, x1))))


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    size = max(1, int(size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
