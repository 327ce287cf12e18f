"""Batched Integrated Gradients over a stream of (sample, step) points.

Two families of rules integrate the path of Sundararajan et al. (2017):

- Captum's own rules (``captum.attr._utils.approximation_methods``: ``gausslegendre``, ``riemann_*``), so results
  equal ``captum.attr.IntegratedGradients`` at the same ``n_steps``/``method``. With ``n_steps=None`` they double the
  step count for the samples not yet converged, recomputing every point (Captum's points are not nested).
- ``nested`` (the default of the diagnostic): the trapezoid rule on the smoothed path parametrisation
  ``alpha = t - sin(2 pi t) / (2 pi)`` (Sidi's sin^2 transformation, Sidi 1993, "A new variable transformation for
  numerical integration"). Its weights vanish at both ends, so the rule reaches the accuracy of Gauss-Legendre at a
  similar point count on smooth paths, and level ``L`` (``2**L - 1`` interior points ``t = j / 2**L``) contains every
  point of level ``L - 1``: refining a sample only evaluates the new points, and the previous level's map comes for
  free as an error estimate. Each sample stops at the first level whose completeness error
  ``|sum(attr) - (f(x) - f(b))|`` is within ``tolerance * |f(x) - f(b)|`` and whose map's estimated error is within
  ``map_tolerance`` (relative L2): the change from the previous level, scaled by the observed convergence ratio
  (:func:`map_error`). Completeness alone is not enough: on piecewise-linear networks (ReLU) it is not monotone in
  the point count (cancellation), while the map's error falls steadily. A sample that has not converged at the first
  levels (up to ``ROUGH_POINTS``) and whose map converges at first order (a rough path) is handed to the panel-adaptive
  trapezoid of :mod:`cerebro.engine.panels`, which puts the points where the map still moves.

The points of all samples in a block are cut into chunks sized by :class:`~cerebro.engine.chunking.ChunkPolicy`
(memory budget + measured throughput), so every pass is full and no pass holds more than the budget. Passes may run
in reduced precision (``dtype``: autocast inside the model; the interpolation input, the gradient accumulation and
the endpoints ``f(x)``, ``f(b)`` stay float32); with the nested rule, :mod:`cerebro.engine.mixed` corrects the
reduced levels with a float32 control variate and finishes in float32 every sample that misses in reduced
precision; :class:`cerebro.engine.precision.PrecisionPlan` keeps reduced precision only while it pays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor

from cerebro.engine import panels
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.loss_scale import LossScale
from cerebro.engine.precision import MEASURE_POINTS, PrecisionPlan, autocast_for
from cerebro.errors import CerebroConfigError

__all__ = ["IGResult", "check_steps", "integrated_gradients", "path_sums", "point_gradients", "nested_rule",
           "nested_levels", "START_STEPS", "NESTED", "NESTED_START_LEVEL", "MAP_TOLERANCE", "map_error"]

#: First level of adaptive IG with Captum's rules (``n_steps=None``); each level doubles it.
START_STEPS = 16
#: The nested rule's name (``method``).
NESTED = "nested"
#: First level of the adaptive nested rule: ``2**2 - 1 = 3`` points (its 1-point sub-level is the first estimate).
NESTED_START_LEVEL = 2
#: The convergence ratio assumed where none has been observed yet (the first level): slow, so the estimate is
#: ``rho / (1 - rho) = 9`` times the change. A sample stops at 3 points only where its map barely moved.
RHO_UNKNOWN = 0.9
#: Largest convergence ratio trusted as geometric (the remainder ``change * rho / (1 - rho)``): third order or faster,
#: which no path with kinks (second order, ``rho -> 1/4``) or jumps (first order, ``1/2``) reaches; smooth models
#: show 0.03-0.11 at 7 points. A ReLU sample whose ratio came out 0.22 by chance stopped 3.3% off (was 1/4).
FAST_RATIO = 0.125
#: Default bound on the estimated relative L2 error of a sample's map (:func:`map_error`).
MAP_TOLERANCE = 0.02
#: The adaptive nested rule hands rough samples to :mod:`cerebro.engine.panels` at its levels of at most this many
#: points that have a convergence ratio (7 and 15).
ROUGH_POINTS = 15


@dataclass
class IGResult:
    """Attributions ``(S, *input)`` and per-sample ``f(x) - f(baseline)``, convergence delta and steps used.

    ``map_change`` is the relative L2 change of each sample's map from the previous nested level (NaN for Captum's
    rules); ``evaluations`` counts forward+backward points (the endpoints' two forward passes are not counted);
    ``converged`` (adaptive nested rule) whether each sample met both stop criteria, completeness and the map's
    estimated error, before ``max_steps``.
    """

    attributions: Tensor
    gap: Tensor
    delta: Tensor
    steps: Tensor
    evaluations: int
    map_change: Tensor | None = None
    converged: Tensor | None = None


def check_steps(diagnostic: str, n_steps: int | str, method: str) -> None:
    """Raise :class:`CerebroConfigError` unless ``n_steps`` is ``"auto"`` or a positive int that ``method`` can use
    (Captum's Riemann rules need two points); the message names ``<diagnostic>.n_steps``."""
    if n_steps != "auto" and (isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1):
        raise CerebroConfigError(f"`{diagnostic}.n_steps` must be a positive int or 'auto', got {n_steps!r}")
    if method.startswith("riemann") and n_steps != "auto" and n_steps < 2:
        raise CerebroConfigError(f"`{diagnostic}.n_steps` must be >= 2 with method {method!r} (Captum's Riemann "
                                 f"rules need two points), got {n_steps}")


def rule_for(method: str, n_steps: int | str) -> str:
    """The integration rule a diagnostic's ``method`` option runs: ``auto`` is the nested rule with ``n_steps: auto``,
    else Gauss-Legendre (Captum's default); any other method as it is."""
    return method if method != "auto" else (NESTED if n_steps == "auto" else "gausslegendre")


def _phi(t: Tensor) -> Tensor:
    return t - torch.sin(2 * math.pi * t) / (2 * math.pi)


def _dphi(t: Tensor) -> Tensor:
    return 1 - torch.cos(2 * math.pi * t)


def nested_rule(n_points: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of the nested rule with ``n_points`` interior points ``t = j / (n_points + 1)``.

    Levels with ``n_points = 2**L - 1`` are nested. Weights sum to 1 up to the rule's error.
    """
    t = torch.arange(1, n_points + 1, dtype=torch.float64) / (n_points + 1)
    return (_dphi(t) / (n_points + 1)).tolist(), _phi(t).tolist()


def nested_levels(max_steps: int, start_level: int = NESTED_START_LEVEL) -> list[int]:
    """Point counts of the nested levels the adaptive rule may use: 7, 15, 31, ... up to ``max_steps``."""
    levels = [2**L - 1 for L in range(start_level, 31) if 2**L - 1 <= max_steps]
    return levels or [2**start_level - 1]


def point_gradients(forward: Callable[..., Tensor], base: Tensor, diff: Tensor, index: Tensor | None, i: Tensor,
                    alpha: Tensor, acc_dtype: torch.dtype, dtype: torch.dtype | None = None,
                    scale: LossScale | None = None) -> Tensor:
    """``grad f(b_i + alpha (x_i - b_i))`` for the points of samples ``i`` at ``alpha`` (one pass, ``dtype``
    autocasting the model only; ``scale``: the pass's :class:`LossScale`, else a fresh one for ``dtype``), in
    ``acc_dtype``."""
    pts = (base[i] + alpha.view(-1, *(1,) * (base.ndim - 1)) * diff[i]).requires_grad_(True)

    def output() -> Tensor:
        with autocast_for(base.device, dtype):
            out = forward(pts) if index is None else forward(pts, index[i])
        return out.to(acc_dtype)

    g = (scale if scale is not None else LossScale(dtype)).gradient(output, pts)
    return g.to(acc_dtype)


def path_sums(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None, alphas: Tensor,
              weights: Tensor, policy: ChunkPolicy, dtype: torch.dtype | None = None,
              plan: PrecisionPlan | None = None, scale: LossScale | None = None) -> Tensor:
    """``sum_k W[m, k] * grad f(b + alphas[k] (x - b))`` for every sample: shape ``(M, S, *input)``, float32
    (float64 for float64 inputs).

    ``weights`` is ``(M, K)``: several weightings of the same points (e.g. two nested levels) cost one pass.
    Points run sample-major in chunks from ``policy``; ``dtype`` (bf16/fp16) autocasts the model only; ``plan``
    (a :class:`~cerebro.engine.precision.PrecisionPlan`) times the pass and keeps its fp16 loss scale across passes.
    """
    if plan is not None:
        out = plan.timed(dtype, x.shape[0] * int(alphas.numel()),
                         lambda: path_sums(forward, x, base, index, alphas, weights, policy, dtype,
                                           scale=plan.loss_scale if dtype == torch.float16 else None))
        plan.observe_rates(dtype, policy.rates(MEASURE_POINTS))
        return out
    scale = scale if scale is not None else LossScale(dtype)  # one per pass: an overflow is retried once per pass
    n_steps = int(alphas.numel())
    acc_dtype = torch.promote_types(x.dtype, torch.float32)  # float64 inputs accumulate in float64
    w = weights.to(device=x.device, dtype=acc_dtype)
    a = alphas.to(device=x.device, dtype=x.dtype)
    s = x.shape[0]
    total = s * n_steps
    acc = torch.zeros((w.shape[0], *x.shape), dtype=acc_dtype, device=x.device)
    diff = x - base
    tail = (1,) * (x.ndim - 1)
    done = 0
    while done < total:
        def one(size: int, start: int = done) -> None:
            p = torch.arange(start, start + size, device=x.device)
            i, k = p // n_steps, p % n_steps  # sample-major: a chunk touches few samples
            g = point_gradients(forward, base, diff, index, i, a[k], acc_dtype, dtype, scale)
            for m in range(w.shape[0]):
                acc[m].index_add_(0, i, g * w[m, k].view(-1, *tail))

        size, _ = policy.run(total - done, one)
        done += size
    return acc


@torch.no_grad()
def _scores(forward: Callable[..., Tensor], x: Tensor, index: Tensor | None) -> Tensor:
    out = forward(x) if index is None else forward(x, index)
    return out.to(torch.promote_types(out.dtype, torch.float32))


def _relative_change(attr: Tensor, prev: Tensor) -> Tensor:
    """Per sample: ``||attr - prev|| / ||attr||`` (0 where the map is all zero)."""
    flat = attr.reshape(attr.shape[0], -1)
    norm = flat.norm(dim=1)
    change = (flat - prev.reshape(flat.shape)).norm(dim=1) / norm.clamp_min(1e-30)
    return torch.where(norm > 0, change, torch.zeros_like(change))


def map_error(change: Tensor, prev_change: Tensor | None, jump_share: Tensor | None = None) -> Tensor:
    """Estimated relative L2 error of a level's map from its change since the previous level and the observed
    convergence ratio ``rho = change / prev_change``. Where the rule converges fast (``rho <= FAST_RATIO``: smooth
    integrands, high order), the remaining error of a geometric sequence, ``change * rho / (1 - rho)``; else at least
    the change itself (``change * max(1, rho / (1 - rho))``): on piecewise-linear networks (ReLU) the integrand
    jumps, the error falls only about as fast as the step, and its sign varies, so a ratio measured from two changes
    is no bound and the change is the honest estimate. Without a ratio (``prev_change=None``: the first level) a
    slow one is assumed (:data:`RHO_UNKNOWN`: 9 times the change).

    ``jump_share`` (the trapezoid of :mod:`cerebro.engine.panels`, whose integrand is piecewise constant): per
    sample, the share of the change that estimates the error there (:func:`cerebro.engine.panels.jump_share`, at
    most 1), used instead of the ``rho`` factor where ``rho > FAST_RATIO``."""
    if prev_change is None:  # no ratio observed yet: a slow one is assumed
        prev_change = change / RHO_UNKNOWN
    rho = torch.where(prev_change > 0, change / prev_change.clamp_min(1e-30), torch.full_like(change, RHO_UNKNOWN))
    rho = rho.clamp(max=RHO_UNKNOWN)
    rough = change * torch.clamp(rho / (1 - rho), min=1.0) if jump_share is None else change * jump_share
    return torch.where(rho <= FAST_RATIO, change * rho / (1 - rho), rough)


def _converged(attr: Tensor, prev: Tensor | None, gap: Tensor, tolerance: float, map_tolerance: float,
               prev_change: Tensor | None = None, jump_share: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: (delta, map change, converged?) of ``attr`` against the previous level's ``prev``: completeness
    within ``tolerance`` and the map's estimated error (:func:`map_error`) within ``map_tolerance``."""
    flat = attr.reshape(attr.shape[0], -1)
    delta = flat.sum(dim=1) - gap
    ok = delta.abs() <= tolerance * gap.abs().clamp_min(1e-12)
    if prev is None:
        return delta, torch.full_like(gap, float("nan")), ok
    change = _relative_change(attr, prev)
    return delta, change, ok & (map_error(change, prev_change, jump_share) <= map_tolerance)


def _nested(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None, gap: Tensor,
            n_steps: int | None, policy: ChunkPolicy, tolerance: float, map_tolerance: float, max_steps: int,
            start_level: int, dtype: torch.dtype | None = None, plan: PrecisionPlan | None = None,
            mid: Tensor | None = None) -> IGResult:
    """The nested rule: a fixed point count, or adaptive levels that only evaluate the new points. ``dtype``
    autocasts every pass as it is (no correction: :mod:`cerebro.engine.mixed` runs reduced precision that converges);
    ``plan`` times the passes. ``mid``: the gradients at the middle of the path (``t = 1/2``, a point of every
    adaptive first level), already computed in this precision (the mixed scheme's float32 control variate): not
    evaluated again."""
    diff = (x - base).to(torch.promote_types(x.dtype, torch.float32))
    if n_steps is not None:  # fixed point count (nested across doublings of n_steps + 1)
        w, a = nested_rule(n_steps)
        g = path_sums(forward, x, base, index, torch.tensor(a), torch.tensor([w]), policy, dtype, plan)[0]
        attr = g * diff
        delta, change, _ = _converged(attr, None, gap, tolerance, map_tolerance)
        return IGResult(attr, gap, delta, torch.full_like(gap, n_steps, dtype=torch.long), x.shape[0] * n_steps,
                        change)
    levels = nested_levels(max_steps, start_level)
    s = x.shape[0]
    attr = torch.zeros_like(diff)
    delta = torch.zeros_like(gap)
    change = torch.full_like(gap, float("nan"))
    steps = torch.zeros(s, dtype=torch.long, device=x.device)
    converged = torch.zeros(s, dtype=torch.bool, device=x.device)
    # first level: all its points, weighted for the level and for its sub-level (the first error estimate)
    n = levels[0]
    j = torch.arange(1, n + 1, dtype=torch.float64)
    t = j / (n + 1)
    w_cur = _dphi(t) / (n + 1)
    w_prev = torch.where(j % 2 == 0, _dphi(t) / ((n + 1) / 2), torch.zeros_like(t))
    rows = [w_cur, w_prev]
    if n >= 7:  # the 1-point level, t = 1/2: its change to the sub-level is the first ratio
        rows.append(torch.where(j == (n + 1) // 2, torch.ones_like(t), torch.zeros_like(t)))
    weights = torch.stack(rows)
    if mid is None:
        sums = path_sums(forward, x, base, index, _phi(t), weights, policy, dtype, plan)
    else:  # the known middle point enters every row with its weight there
        other = j != (n + 1) // 2
        sums = path_sums(forward, x, base, index, _phi(t[other]), weights[:, other], policy, dtype, plan)
        w_mid = weights[:, ~other].to(device=sums.device, dtype=sums.dtype).view(-1, *(1,) * mid.ndim)
        sums = sums + w_mid * mid.to(sums.dtype)[None]
    g_cur, g_prev, *g_mid = sums
    # at 3 points (the 1-point level is the sub-level itself) there is no ratio: map_error assumes a slow one
    prev_change = _relative_change(g_prev * diff, g_mid[0] * diff) if g_mid else None
    todo = torch.arange(s, device=x.device)
    evaluations = s * (n if mid is None else n - 1)
    for level, n in enumerate(levels):
        if level:  # the new points t = odd j / (n + 1); the previous level's sum is halved (h halves)
            t = torch.arange(1, n + 1, 2, dtype=torch.float64) / (n + 1)
            new = path_sums(forward, x[todo], base[todo], None if index is None else index[todo], _phi(t),
                            (_dphi(t) / (n + 1))[None], policy, dtype, plan)[0]
            g_prev, g_cur = g_cur, g_cur / 2 + new
            evaluations += todo.numel() * t.numel()
        a_cur = g_cur * diff[todo]
        d, c, ok = _converged(a_cur, g_prev * diff[todo], gap[todo], tolerance, map_tolerance, prev_change)
        attr[todo], delta[todo], change[todo], steps[todo], converged[todo] = a_cur, d, c, n, ok
        if bool(ok.all()) or level == len(levels) - 1:
            break
        keep = ~ok
        if prev_change is not None and n <= ROUGH_POINTS and n + 2 * panels.PANELS + 1 <= max_steps:
            rough = keep & (c >= panels.ROUGH_RATIO * prev_change)  # rough: refine where the map moves
            rough_idx = todo[rough]
            for start in range(0, rough_idx.numel(), panels.GROUP):  # groups bound the panels' state (9 maps each)
                sel = rough_idx[start:start + panels.GROUP]
                a, d, c2, pts, ev, ok2 = panels.adaptive_panels(
                    forward, x[sel], base[sel], None if index is None else index[sel], gap[sel], policy, tolerance,
                    map_tolerance, max_steps - n, plan)
                attr[sel], delta[sel], change[sel], steps[sel] = a, d, c2, pts.to(steps.device) + n
                converged[sel] = ok2
                evaluations += ev
            if bool(rough.any()):
                keep = keep & ~rough
                if not bool(keep.any()):
                    break
        todo, g_cur, g_prev, prev_change = todo[keep], g_cur[keep], g_prev[keep], c[keep]
    return IGResult(attr, gap, delta, steps, evaluations, change, converged)


def integrated_gradients(forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None,
                         n_steps: int | None, method: str,
                         policy: ChunkPolicy | Callable[[torch.dtype | None], ChunkPolicy],
                         tolerance: float = 0.01,
                         max_steps: int = 1024, start_steps: int = START_STEPS, autocast: torch.dtype | None = None,
                         *, map_tolerance: float = MAP_TOLERANCE, start_level: int = NESTED_START_LEVEL,
                         dtype: torch.dtype | None = None, plan: PrecisionPlan | None = None,
                         precision_tolerance: float = 0.02) -> IGResult:
    """Integrated Gradients of ``forward`` for the samples ``x`` against ``base`` (same shape).

    Args:
        forward: ``forward(points)`` or ``forward(points, index)`` -> one scalar per point.
        n_steps: points per sample, or ``None`` for adaptive steps.
        method: ``nested`` or one of Captum's rules (equal to Captum at fixed ``n_steps``).
        policy: the chunk policy, or ``policy(dtype)`` giving one per precision.
        tolerance: adaptive target ``|delta| <= tolerance * |f(x) - f(base)|`` per sample.
        max_steps: most points per sample in adaptive mode.
        start_steps: first step count of adaptive Captum rules (doubled, every point recomputed).
        autocast: deprecated alias of ``dtype``.
        map_tolerance: nested adaptive rule: most relative L2 change of a map between two levels.
        start_level: nested adaptive rule: first level (``2**start_level - 1`` points).
        dtype: reduced precision of the passes (``torch.bfloat16``/``torch.float16``), ``None`` = float32: the same as
            a ``plan`` that forces it.
        plan: the run's :class:`~cerebro.engine.precision.PrecisionPlan`. The nested rule runs reduced precision
            where it pays and float32 where a sample needs it (:mod:`cerebro.engine.mixed`); Captum's rules run
            every point in the plan's precision as it is (no correction).
        precision_tolerance: with reduced precision, most relative L2 rounding floor of a sample's map.
    """
    if x.shape[0] == 0:  # an empty block: nothing to attribute (no forward pass on an empty batch)
        acc = torch.promote_types(x.dtype, torch.float32)
        empty = torch.zeros(0, dtype=acc, device=x.device)
        return IGResult(torch.zeros(x.shape, dtype=acc, device=x.device), empty, empty.clone(),
                        torch.zeros(0, dtype=torch.long, device=x.device), 0, empty.clone(),
                        torch.zeros(0, dtype=torch.bool, device=x.device))
    dtype = dtype if dtype is not None else autocast
    if plan is None and dtype not in (None, torch.float32):
        plan = PrecisionPlan("bf16" if dtype == torch.bfloat16 else "fp16", x.device)
    dtype = plan.dtype if plan is not None else None
    with torch.enable_grad():
        fx, fb = _scores(forward, x, index), _scores(forward, base, index)
        gap = fx - fb
        if method == NESTED and plan is not None:
            from cerebro.engine.mixed import nested_mixed

            per_dtype = policy if callable(policy) else (lambda d: policy)
            return nested_mixed(forward, x, base, index, gap, n_steps, per_dtype, tolerance, map_tolerance,
                                max_steps, start_level, plan, precision_tolerance)
        policy = policy(dtype) if callable(policy) else policy
        if method == NESTED:
            return _nested(forward, x, base, index, gap, n_steps, policy, tolerance, map_tolerance, max_steps,
                           start_level)
        if plan is not None:  # Captum's rules: every point in the plan's precision, as it is
            plan.samples["reduced" if dtype is not None else "fp32"] += x.shape[0]
        step_fn, alpha_fn = approximation_parameters(method)
        steps = torch.full((x.shape[0],), n_steps or start_steps, dtype=torch.long, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)
        attr = torch.zeros_like(x, dtype=torch.promote_types(x.dtype, torch.float32))
        delta = torch.zeros_like(gap)
        evaluations = 0
        while todo.numel():
            n = int(steps[todo[0]])
            sub_index = None if index is None else index[todo]
            grads = path_sums(forward, x[todo], base[todo], sub_index, torch.tensor(alpha_fn(n)),
                              torch.tensor([step_fn(n)]), policy, dtype, plan)[0]
            evaluations += todo.numel() * n
            a = grads * (x[todo] - base[todo]).to(grads.dtype)
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
