"""Adaptive Integrated Gradients for rough paths: a trapezoid rule refined panel by panel where the map still moves.

On a piecewise-linear network (ReLU, max-pooling) IG's integrand, the gradient along the path, is piecewise
constant: it jumps wherever a unit switches. No rule is better than first order there (each jump costs about its
size times the local spacing), so what decides the cost is where the points are. Where the units switch depends on
the model: all along the path on a trained resnet18, near the baseline on a random ReLU MLP, near both ends on a
random-init mobilenet_v3_small; a fixed parametrisation (the smoothed rule of :mod:`cerebro.engine.integrated`,
Gauss-Legendre, the plain trapezoid) wins on some and loses on others. So the points follow the map's change:

the path ``alpha`` in ``[0, 1]`` is cut into :data:`PANELS` equal panels, each with its own nested trapezoid level
(``2**l`` intervals, both ends included; refining a panel evaluates only its new midpoints). After each round the
panels whose map changed most at their last refinement (at least half the largest change) are refined. A sample
stops by the default rule's criteria (:func:`cerebro.engine.integrated._converged`): completeness, and the map's
estimated error from the change of the whole map since each panel's previous level. The integrand being piecewise
constant, that estimate is a share of the change (:func:`jump_share`): near ``1/sqrt(3)`` of it where many units
switch (a trained resnet18), the change itself where one jump or a coherent error dominates.

:func:`cerebro.engine.integrated._nested` starts every sample on the smoothed rule (smooth networks stop there at 7
points) and hands over a sample that has not converged and whose map error falls no faster than first order
(the ratio of two successive changes ``>= ROUGH_RATIO``; smooth integrands give about 1/16).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.precision import PrecisionPlan

__all__ = ["PANELS", "ROUGH_RATIO", "REFINE_SHARE", "JUMP_MARGIN", "GROUP", "adaptive_panels", "jump_share",
           "point_sums"]

#: Equal panels of the path, each refined on its own.
PANELS = 4
#: A sample whose map change shrinks by less than this factor per level is rough (first order: 1/2).
ROUGH_RATIO = 0.3
#: A round refines the panels whose last change is at least this share of the sample's largest one.
REFINE_SHARE = 0.5
#: Safety factor on the many-jump estimate of the trapezoid's error (:func:`jump_share`), set on the measured ratios
#: of true error to change: 0.45-0.76 on a trained resnet18, up to 1.03 on random ReLU MLPs (docs/performance.md).
JUMP_MARGIN = 1.2
#: Rough samples are refined this many at a time (their state: 9 maps each).
GROUP = 16


def point_sums(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None, sample: Tensor,
               alpha: Tensor, weight: Tensor, slot: Tensor, n_slots: int, policy: ChunkPolicy,
               plan: PrecisionPlan | None = None) -> Tensor:
    """``acc[slot[k]] += weight[k] * grad f(b + alpha[k] (x - b))`` of sample ``sample[k]`` for every point ``k``:
    shape ``(n_slots, *input)``, float32 (float64 for float64 inputs). Points of different samples and alphas share
    passes, in chunks from ``policy``."""
    from cerebro.engine.integrated import point_gradients

    if plan is not None:
        return plan.timed(None, int(alpha.numel()), lambda: point_sums(forward, x, base, index, sample, alpha, weight,
                                                                       slot, n_slots, policy))
    acc_dtype = torch.promote_types(x.dtype, torch.float32)
    acc = torch.zeros((n_slots, *x.shape[1:]), dtype=acc_dtype, device=x.device)
    diff = x - base
    tail = (1,) * (x.ndim - 1)
    sample, slot = sample.to(x.device), slot.to(x.device)
    alpha, weight = alpha.to(device=x.device, dtype=x.dtype), weight.to(device=x.device, dtype=acc_dtype)
    total, done = int(alpha.numel()), 0
    while done < total:
        def one(size: int, start: int = done) -> None:
            k = torch.arange(start, start + size, device=x.device)
            g = point_gradients(forward, base, diff, index, sample[k], alpha[k], acc_dtype)
            acc.index_add_(0, slot[k], g * weight[k].view(-1, *tail))

        size, _ = policy.run(total - done, one)
        done += size
    return acc


def jump_share(step: Tensor, prev_step: Tensor) -> Tensor:
    """Per sample: the share of the map's last change ``step`` (``(S, *input)``) that estimates the trapezoid's
    remaining error, given the change before it, ``prev_step``.

    The integrand is piecewise constant. A jump ``J`` at a uniform place in a cell of width ``h`` leaves the refined
    trapezoid an error uniform in ``J * [-h/4, h/4]`` and changes it by exactly ``J h/4``: the change bounds one
    jump's error, and where many independent jumps add up, the error is about ``1/sqrt(3)`` of the change
    (``E[e^2] = E[d^2] / 3``). Two things tell how far that average can be trusted:

    - coherence: many jumps make successive changes point in unrelated directions (``|cos|`` near 0); one jump, or
      a coherent error, makes them parallel (``|cos|`` near 1), and the share goes to 1 as ``1/3 + 2/3 cos^2``;
    - spread: the ratio of two norms concentrates only over many independent coordinates; the change's effective
      number of coordinates ``n = (sum d^2)^2 / sum d^4`` widens the share by ``1 + 2 sqrt(2 / n)``.

    The share is ``min(1, JUMP_MARGIN * sqrt((1/3 + 2/3 cos^2) (1 + 2 sqrt(2/n))))``: about 0.75 on a trained
    resnet18 (3 x 32 x 32), 0.85-1 on a ReLU MLP with 32 inputs, 1 (the change itself) for one jump or a zero
    change."""
    def scaled(v: Tensor) -> Tensor:  # largest entry 1: no underflow in v^4, no float64 (MPS has none)
        v = v.flatten(1).to(torch.promote_types(v.dtype, torch.float32))
        return v / v.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)

    a, b = scaled(step), scaled(prev_step)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = torch.where(norms > 0, (a * b).sum(dim=1).abs() / norms.clamp_min(1e-30), torch.ones_like(norms))
    sq = a * a
    spread = sq.sum(dim=1) ** 2 / (sq * sq).sum(dim=1).clamp_min(1e-30)
    share = JUMP_MARGIN * torch.sqrt((1 / 3 + 2 / 3 * cos.clamp(0, 1) ** 2) * (1 + 2 * torch.sqrt(2 / spread)))
    return torch.where(norms > 0, share.clamp(max=1.0), torch.ones_like(share)).to(step.dtype)


def adaptive_panels(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None, gap: Tensor,
                    policy: ChunkPolicy, tolerance: float, map_tolerance: float, max_points: int,
                    plan: PrecisionPlan | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, int, Tensor]:
    """Panel-adaptive trapezoid IG of the samples ``x`` in float32: ``(attributions, delta, map change, points,
    evaluations, converged)``; ``points`` counts each sample's gradient evaluations (at most ``max_points``)."""
    from cerebro.engine.integrated import _converged, path_sums

    s, p = x.shape[0], PANELS
    diff = (x - base).to(torch.promote_types(x.dtype, torch.float32))
    width = 1.0 / p
    # round 0: the panel edges and midpoints of every sample (one pass); level 0 (edges) is each panel's previous
    edges = torch.arange(p + 1, dtype=torch.float64) * width
    mids = (torch.arange(p, dtype=torch.float64) + 0.5) * width
    alphas = torch.cat([edges, mids])
    rows = torch.zeros(2 * p, 2 * p + 1, dtype=torch.float64)
    for q in range(p):
        rows[q, q] = rows[q, q + 1] = width / 2  # level 0: (g(e_q) + g(e_q+1)) w / 2
        rows[p + q, q] = rows[p + q, q + 1] = width / 4  # level 1: half of level 0 plus the midpoint
        rows[p + q, p + 1 + q] = width / 2
    g = path_sums(forward, x, base, index, alphas, rows, policy, plan=plan)  # (2P, S, *input)
    prev_sums, sums = g[:p].transpose(0, 1).contiguous(), g[p:].transpose(0, 1).contiguous()  # (S, P, *input)
    level = torch.ones(s, p, dtype=torch.long)
    points = torch.full((s,), 2 * p + 1, dtype=torch.long)
    evaluations = s * (2 * p + 1)
    attr = torch.zeros_like(diff)
    delta = torch.zeros_like(gap)
    change = torch.full_like(gap, float("nan"))
    converged = torch.zeros_like(gap, dtype=torch.bool)
    prev_change: Tensor | None = None
    prev_step: Tensor | None = None  # each sample's previous change of the whole map (its coherence)
    todo = torch.arange(s, device=x.device)
    while True:
        a_cur = sums[todo].sum(dim=1) * diff[todo]
        a_prev = prev_sums[todo].sum(dim=1) * diff[todo]
        step = a_cur - a_prev
        share = None if prev_step is None else jump_share(step, prev_step)
        d, c, ok = _converged(a_cur, a_prev, gap[todo], tolerance, map_tolerance, prev_change, share)
        if prev_change is None:  # no convergence ratio yet: every sample is refined once
            ok = torch.zeros_like(ok)
        attr[todo], delta[todo], change[todo], converged[todo] = a_cur, d, c, ok
        left = ~ok & (points[todo.cpu()] < max_points).to(ok.device)
        if not bool(left.any()):
            break
        todo, prev_change, prev_step = todo[left], c[left], step[left]
        # per panel: the map's change at its last refinement; refine those with at least REFINE_SHARE of the largest
        panel_change = ((sums[todo] - prev_sums[todo]) * diff[todo].unsqueeze(1)).flatten(2).norm(dim=2)
        refine = (panel_change >= REFINE_SHARE * panel_change.max(dim=1, keepdim=True).values).cpu()
        sample, alpha, weight, slot = [], [], [], []
        for row, i in enumerate(todo.tolist()):
            for q in refine[row].nonzero().flatten().tolist():
                n = 2 ** int(level[i, q])
                if points[i] + n > max_points:  # the budget: this panel stays as it is
                    refine[row, q] = False
                    continue
                h = width / n
                k = torch.arange(n, dtype=torch.float64)
                alpha.append(q * width + (k + 0.5) * h)
                weight.append(torch.full((n,), h / 2, dtype=torch.float64))
                sample.append(torch.full((n,), i, dtype=torch.long))
                slot.append(torch.full((n,), row * p + q, dtype=torch.long))
                points[i] += n
        if not sample:  # no refinement fits the budget: these samples stay as they are (flagged if off)
            break
        new = point_sums(forward, x, base, index, torch.cat(sample), torch.cat(alpha), torch.cat(weight),
                         torch.cat(slot), todo.numel() * p, policy, plan).view(todo.numel(), p, *x.shape[1:])
        evaluations += int(torch.cat(alpha).numel())
        mask = refine.to(x.device).view(todo.numel(), p, *([1] * (x.ndim - 1)))
        refined = sums[todo] / 2 + new
        prev_sums[todo] = torch.where(mask, sums[todo], prev_sums[todo])
        sums[todo] = torch.where(mask, refined, sums[todo])
        level[todo.cpu()] += refine.long()
    return attr, delta, change, points, evaluations, converged
