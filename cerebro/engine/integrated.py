"""Batched Integrated Gradients over a stream of (sample, step) points.

The integral of Sundararajan et al. (2017) is approximated with Captum's own rules
(``captum.attr._utils.approximation_methods``), so results equal ``captum.attr.IntegratedGradients`` at the same
``n_steps``/``method``. Unlike one Captum call per batch, the points of all samples in a block are cut into chunks
sized by :class:`~cerebro.engine.chunking.ChunkPolicy` (memory budget + measured throughput), so every pass is
full and no pass holds more than the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy

__all__ = ["IGResult", "integrated_gradients", "START_STEPS"]

#: First level of adaptive IG (``n_steps=None``); each level doubles it.
START_STEPS = 16


@dataclass
class IGResult:
    """Attributions ``(S, *input)`` and per-sample ``f(x) - f(baseline)``, convergence delta and steps used."""

    attributions: Tensor
    gap: Tensor
    delta: Tensor
    steps: Tensor
    evaluations: int


def _path_gradients(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None, n_steps: int,
                    method: str, policy: ChunkPolicy, autocast: torch.dtype | None) -> Tensor:
    """``sum_k w_k * grad f(b + a_k (x - b))`` for every sample, in chunks of (sample, step) points."""
    step_fn, alpha_fn = approximation_parameters(method)
    w = torch.tensor(step_fn(n_steps), dtype=torch.float32, device=x.device)
    a = torch.tensor(alpha_fn(n_steps), dtype=x.dtype, device=x.device)
    s = x.shape[0]
    total = s * n_steps
    acc = torch.zeros_like(x, dtype=torch.float32)
    diff = x - base
    tail = (1,) * (x.ndim - 1)
    amp = (torch.autocast(x.device.type, dtype=autocast) if autocast is not None else nullcontext())
    done = 0
    while done < total:
        def one(size: int, start: int = done) -> None:
            p = torch.arange(start, start + size, device=x.device)
            i, k = p // n_steps, p % n_steps  # sample-major: a chunk touches few samples
            pts = (base[i] + a[k].view(-1, *tail) * diff[i]).requires_grad_(True)
            with amp:
                out = forward(pts) if index is None else forward(pts, index[i])
            (g,) = torch.autograd.grad(out.float().sum(), pts)
            acc.index_add_(0, i, g.float() * w[k].view(-1, *tail))

        size, _ = policy.run(total - done, one)
        done += size
    return acc


@torch.no_grad()
def _scores(forward: Callable[..., Tensor], x: Tensor, index: Tensor | None) -> Tensor:
    return (forward(x) if index is None else forward(x, index)).float()


def integrated_gradients(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None,
                         n_steps: int | None, method: str, policy: ChunkPolicy, tolerance: float = 0.01,
                         max_steps: int = 1024, start_steps: int = START_STEPS, autocast: torch.dtype | None = None) -> IGResult:
    """Integrated Gradients of ``forward`` for the samples ``x`` against ``base`` (same shape).

    ``n_steps=None`` is adaptive: start at ``start_steps`` and double, for the samples not yet converged only,
    until ``|delta| <= tolerance * |f(x) - f(base)|`` or ``max_steps``.
    """
    with torch.enable_grad():
        fx, fb = _scores(forward, x, index), _scores(forward, base, index)
        gap = fx - fb
        steps = torch.full((x.shape[0],), n_steps or start_steps, dtype=torch.long, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)
        attr = torch.zeros_like(x, dtype=torch.float32)
        delta = torch.zeros_like(gap)
        evaluations = 0
        while todo.numel():
            n = int(steps[todo[0]])
            sub_index = None if index is None else index[todo]
            grads = _path_gradients(forward, x[todo], base[todo], sub_index, n, method, policy, autocast)
            evaluations += todo.numel() * n
            a = grads * (x[todo] - base[todo]).float()
            attr[todo] = a
            delta[todo] = a.reshape(a.shape[0], -1).sum(dim=1) - gap[todo]
            if n_steps is not None:
                break
            bad = delta[todo].abs() > tolerance * gap[todo].abs().clamp_min(1e-12)
            if n * 2 > max_steps or not bool(bad.any()):
                break
            todo = todo[bad]
            steps[todo] = n * 2
    return IGResult(attr, gap, delta, steps, evaluations)
