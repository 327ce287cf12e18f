"""Nested Integrated Gradients with most points in reduced precision and float32 where it matters.

Reduced precision (bf16/fp16 autocast inside the model) has a noise floor: a sample that misses its tolerance in bf16
does not converge by adding bf16 points. The scheme here, per sample:

1. The first nested level runs in reduced precision, and one point of it (the one nearest the middle of the path)
   also in float32: ``corr = g32(t_mid) - g_red(t_mid)`` is a control variate that removes the part of the rounding
   error that is smooth along the path (rounded weights, biased kernels). The estimate of a level is
   ``G_red + corr`` (the weights of a level sum to 1). ``|sum(corr * (x - b))| / |f(x) - f(b)|`` and
   ``||corr * (x - b)|| / ||map||`` measure that sample's rounding floor.
2. A sample stops when its completeness error and its map change meet the float32 criteria, and its map rounding
   floor is within ``precision_tolerance``. It refines in reduced precision only while its error is still falling
   (at least halved since the previous level) and well above its rounding floor; from the 3-point level, too coarse
   to tell, every sample goes on to 7.
3. Every other sample is finished in float32 from scratch by the float32 rule, so it ends exactly as a float32 run
   would: converged, or flagged with the same delta (its first level reuses the float32 middle point of step 1).

:class:`~cerebro.engine.precision.PrecisionPlan` times every pass; the first block also runs a few samples fully in
float32 beside a few in the reduced scheme (both real work) to measure the speed per point, and the plan drops reduced
precision for the rest of the run as soon as it stops paying: its cost, control variates and fall-backs included,
against the float32 points its samples would have needed (3 where the 1-to-3-point change was within the rounding
floor: a gradient constant along the path, on which float32 stops at 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.integrated import (IGResult, _converged, _dphi, _nested, _phi, _relative_change, nested_levels,
                                       path_sums)
from cerebro.engine.precision import PrecisionPlan

__all__ = ["nested_mixed", "FLOOR_MARGIN", "AB_SAMPLES"]

#: A sample refines in reduced precision only while its error is this many times its rounding floor.
FLOOR_MARGIN = 4.0
#: Samples run in each precision on the first block to measure the speed per point. The float32 side is the part of
#: the run that cannot gain: 4 held 8-sample runs of smooth models 1.35x instead of 1.65x at bf16 3x per point
#: (clocked: 56 float32 evaluations against 41.3 and 34 float32-equivalent), and 32-sample runs 1.85x instead of 1.96x.
AB_SAMPLES = 2


def _take(index: object, sel: Tensor) -> object:
    return None if index is None else index[sel]  # type: ignore[index]


def _merge(s: int, parts: list[tuple[Tensor, IGResult]]) -> IGResult:
    """One :class:`IGResult` for ``s`` samples from results over disjoint index sets."""
    first = parts[0][1]
    attr = first.attributions.new_zeros((s, *first.attributions.shape[1:]))
    gap, delta, change = (first.gap.new_zeros(s) for _ in range(3))
    steps = first.steps.new_zeros(s)
    converged = torch.zeros(s, dtype=torch.bool, device=first.gap.device)
    evaluations = 0
    for sel, r in parts:
        attr[sel], gap[sel], delta[sel], steps[sel] = r.attributions, r.gap, r.delta, r.steps
        change[sel] = r.map_change if r.map_change is not None else float("nan")
        if r.converged is not None:
            converged[sel] = r.converged
        evaluations += r.evaluations
    return IGResult(attr, gap, delta, steps, evaluations, change, converged)


def nested_mixed(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: object, gap: Tensor,
                 n_steps: int | None, policy: Callable[[torch.dtype | None], ChunkPolicy], tolerance: float,
                 map_tolerance: float, max_steps: int, start_level: int, plan: PrecisionPlan,
                 precision_tolerance: float) -> IGResult:
    """Nested IG of a block under ``plan`` (``policy(dtype)`` gives each precision's chunk policy)."""
    s = x.shape[0]
    everyone = torch.arange(s, device=x.device)

    def fp32(sel: Tensor) -> IGResult:
        res = _nested(forward, x[sel], base[sel], _take(index, sel), gap[sel], n_steps, policy(None), tolerance,
                      map_tolerance, max_steps, start_level, None, plan=plan)
        plan.samples["fp32"] += int(sel.numel())
        return res

    def reduced(sel: Tensor) -> IGResult:
        return _reduced(forward, x[sel], base[sel], _take(index, sel), gap[sel], n_steps, policy, tolerance,
                        map_tolerance, max_steps, start_level, plan, precision_tolerance)

    if plan.dtype is None:
        return fp32(everyone)
    if plan.measured:
        return reduced(everyone)
    k = min(s // 2, AB_SAMPLES)
    if k < 1:  # one sample: nothing to compare yet
        return fp32(everyone)
    a, b, rest = everyone[:k], everyone[k:2 * k], everyone[2 * k:]
    for d in (None, plan.dtype):  # warm-up, one point each (kernel selection), before anything is timed
        path_sums(forward, x[:1], base[:1], _take(index, everyone[:1]), torch.tensor([0.5]), torch.ones(1, 1),
                  ChunkPolicy(1, None, x.device, 1), d)
    before = plan.seconds["fp32"], plan.points["fp32"]
    res_a = fp32(a)
    p32 = plan.points["fp32"] - before[1]
    t32 = (plan.seconds["fp32"] - before[0]) / max(p32, 1)
    name = plan.candidate
    before = plan.seconds[name], plan.points[name]
    res_b = reduced(b)
    pr = plan.points[name] - before[1]
    tr = (plan.seconds[name] - before[0]) / max(pr, 1)
    plan.judge_speed(t32, tr, points=min(p32, pr))
    # float32's speed is known now: the side-by-side samples' whole cost (control variates and float32 fall-backs
    # included) is judged before the rest of the block runs reduced; on so few samples only a cost above float32's
    # stops it (a gradient constant along the path: 7 reduced points and a float32 one where float32 needs 3)
    plan.account(0.0, 0, limit=1.0)
    parts = [(a, res_a), (b, res_b)]
    if rest.numel():
        parts.append((rest, reduced(rest) if plan.dtype is not None else fp32(rest)))
    return _merge(s, parts)


def _reduced(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: object, gap: Tensor,
             n_steps: int | None, policy: Callable[[torch.dtype | None], ChunkPolicy], tolerance: float,
             map_tolerance: float, max_steps: int, start_level: int, plan: PrecisionPlan,
             precision_tolerance: float) -> IGResult:
    """The reduced scheme for the samples ``x``; see the module docstring."""
    dtype = plan.dtype
    assert dtype is not None
    seconds0 = sum(plan.seconds.values())
    s = x.shape[0]
    adaptive = n_steps is None
    levels = nested_levels(max_steps, start_level) if adaptive else [n_steps]
    diff = (x - base).to(torch.promote_types(x.dtype, torch.float32))
    n = levels[0]
    j = torch.arange(1, n + 1, dtype=torch.float64)
    t = j / (n + 1)
    mid = (n + 1) // 2 - 1  # the point nearest t = 0.5 (exactly 0.5 on odd levels)
    rows = [_dphi(t) / (n + 1), torch.zeros_like(t)]
    rows[1][mid] = 1.0  # the middle point alone, weight 1: the rounding error where the control variate is taken
    if adaptive:  # the level below (every other point), the first error estimate
        rows.append(torch.where(j % 2 == 0, _dphi(t) / ((n + 1) / 2), torch.zeros_like(t)))
    sums = path_sums(forward, x, base, index, _phi(t), torch.stack(rows), policy(dtype), dtype, plan=plan)
    g_mid32 = path_sums(forward, x, base, index, _phi(t[mid:mid + 1]), torch.ones(1, 1, dtype=torch.float64),
                        policy(None), None, plan=plan)[0]
    evaluations = s * (n + 1)
    corr = g_mid32 - sums[1]
    g_cur = sums[0]
    g_prev = sums[2] if adaptive else None
    c = corr * diff
    # the first ratio of the map-error estimate: the sub-level's change from the 1-point level (float32 there), where
    # the first level has 7 points or more; at 3 there is none (map_error assumes a slow one), as in float32
    prev_change = _relative_change((g_prev + corr) * diff, g_mid32 * diff) if g_prev is not None and n >= 7 else None
    flat_c = c.reshape(s, -1)
    comp_floor = flat_c.sum(dim=1).abs() / gap.abs().clamp_min(1e-12)
    attr = torch.zeros_like(diff)
    delta = torch.zeros_like(gap)
    change = torch.full_like(gap, float("nan"))
    steps = torch.zeros(s, dtype=torch.long, device=x.device)
    done = torch.zeros(s, dtype=torch.bool, device=x.device)
    # samples whose change from 1 to 3 points was within the rounding floor (EEGNeX at random init: 0.25% against a
    # floor of 0.6%; smooth trained models: 1.6-25 times the floor): float32 would have stopped them at 3 (a gradient
    # constant along the path), whatever level the reduced scheme reached; the cost accounting counts 3
    first_at_floor = torch.zeros(s, dtype=torch.bool, device=x.device)
    todo = torch.arange(s, device=x.device)
    prev_delta = None
    for level, n in enumerate(levels):
        if level:  # the new points of the next level, still in reduced precision
            t = torch.arange(1, n + 1, 2, dtype=torch.float64) / (n + 1)
            new = path_sums(forward, x[todo], base[todo], _take(index, todo), _phi(t), (_dphi(t) / (n + 1))[None],
                            policy(dtype), dtype, plan=plan)[0]
            g_prev, g_cur = g_cur, g_cur / 2 + new
            evaluations += todo.numel() * t.numel()
        a_cur = (g_cur + corr[todo]) * diff[todo]
        prev = None if g_prev is None else (g_prev + corr[todo]) * diff[todo]
        d, ch, ok = _converged(a_cur, prev, gap[todo], tolerance, map_tolerance, prev_change)
        norm = a_cur.reshape(todo.numel(), -1).norm(dim=1)
        map_floor = flat_c[todo].norm(dim=1) / norm.clamp_min(1e-30)
        ok = ok & (map_floor <= precision_tolerance)
        attr[todo], delta[todo], change[todo], steps[todo] = a_cur, d, ch, n
        done[todo[ok]] = True
        rel = d.abs() / gap[todo].abs().clamp_min(1e-12)
        above_floor = rel > FLOOR_MARGIN * comp_floor[todo]
        falling = torch.ones_like(ok) if prev_delta is None else d.abs() <= 0.5 * prev_delta.abs()
        moving = torch.nan_to_num(ch, nan=float("inf")) > FLOOR_MARGIN * map_floor
        # the 3-point level is too coarse to tell the rounding floor: its completeness cancels by chance, and a
        # smooth path's change from 1 to 3 points can be as small as a few times the floor; such samples go on to 7
        coarse = n < 7
        if coarse:
            first_at_floor[todo] = ch <= map_floor
        go_on = ~ok & (map_floor <= precision_tolerance) & (coarse | (above_floor & falling & moving))
        if level == len(levels) - 1 or not bool(go_on.any()):
            break
        prev_delta = None if coarse else d[go_on]
        todo, g_cur, prev_change = todo[go_on], g_cur[go_on], ch[go_on]
        g_prev = g_prev[go_on] if g_prev is not None else None
    converged = done.clone()
    fell = (~done).nonzero().flatten()
    plan.samples["reduced"] += int(done.sum())
    equivalent = int(torch.where(first_at_floor, torch.full_like(steps, levels[0]), steps)[done].sum())
    if fell.numel():  # finished in float32 from scratch: they end exactly as a float32 run would
        res = _nested(forward, x[fell], base[fell], _take(index, fell), gap[fell], n_steps, policy(None), tolerance,
                      map_tolerance, max_steps, start_level, None, plan=plan, mid=g_mid32[fell] if adaptive else None)
        attr[fell], delta[fell], steps[fell] = res.attributions, res.delta, res.steps
        change[fell] = res.map_change if res.map_change is not None else float("nan")
        if res.converged is not None:
            converged[fell] = res.converged
        evaluations += res.evaluations
        equivalent += int(res.steps.sum())
        plan.samples["fell_back"] += int(fell.numel())
    plan.account(sum(plan.seconds.values()) - seconds0, equivalent)
    return IGResult(attr, gap, delta, steps, evaluations, change, converged)

