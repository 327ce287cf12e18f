"""Deletion and insertion curves (Petsiuk, Das & Saenko, "RISE", BMVC 2018, arXiv:1806.07421): batched forwards.

An input is split into *units* in its own terms: patches (all channels of a p x p square) for images, channels, time
windows or channel x time blocks for ``(C, T)`` signals, tokens for token ids, single features for flat vectors.
A map ranks the units (the sum of its values inside each unit, most positive first). The deletion curve replaces
the top units by a reference (the run's baseline, a blurred copy or the sample set's mean) level after level; the
insertion curve starts from the reference and puts the top units back. A random order of the same units, with the
same reference, gives the chance curve every map is read against. The levels and the areas under the curves:
:mod:`cerebro.engine.curve_levels`.

Every point of a curve is one forward pass of one perturbed sample, without gradients; points of every order,
level and sample of a block are stacked into passes sized by the engine's :class:`ChunkPolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy
from cerebro.errors import CerebroConfigError

__all__ = ["UNIT_KINDS", "Units", "make_units", "maps_on_input", "unit_order", "random_orders", "blur",
           "perturbation_curves"]

UNIT_KINDS = ("auto", "patches", "channels", "time", "blocks", "features", "tokens")


@dataclass(frozen=True)
class Units:
    """``labels``: the unit of every input element (shape = input shape, int64 in ``[0, n)``)."""

    labels: Tensor
    n: int
    kind: str
    size: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.n} {self.kind} of {' x '.join(str(s) for s in self.size)}"


def _grid_labels(shape: Sequence[int], size: Sequence[int]) -> tuple[Tensor, int]:
    """Unit ids of a regular grid: axis ``d`` is cut into pieces of ``size[d]`` (the last one may be shorter)."""
    labels = torch.zeros((), dtype=torch.long)
    total = 1
    for dim, (length, step) in enumerate(zip(shape, size)):
        pieces = math.ceil(length / step)
        coord = torch.arange(length) // step
        view = [1] * len(shape)
        view[dim] = length
        labels = labels * pieces + coord.reshape(view)
        total *= pieces
    return labels.expand(*shape).contiguous(), total


def make_units(input_shape: Sequence[int], kind: str = "auto", patch: int | None = None, window: int | None = None,
               block_channels: int = 1, integer: bool = False, max_units: int = 256) -> Units:
    """Perturbation units of one input of shape ``input_shape``.

    Args:
        kind: ``auto`` (tokens for integer inputs, blocks for ``(C, T)``, patches for ``(C, *spatial)``,
            features for flat vectors) or one of :data:`UNIT_KINDS`.
        patch: side of an image patch; ``None`` = the smallest side giving at most ``max_units`` patches.
        window: samples per time window (``time`` and ``blocks``); ``None`` = ``T / 20`` (at least 1).
        block_channels: channels per block (``blocks``).
    """
    shape = tuple(int(s) for s in input_shape)
    if kind not in UNIT_KINDS:
        raise CerebroConfigError(f"`faithfulness.units` can be {list(UNIT_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = ("tokens" if integer else "features") if len(shape) == 1 else "blocks" if len(shape) == 2 else "patches"
    signal = {"channels", "time", "blocks"}
    if kind in signal and len(shape) != 2:
        raise CerebroConfigError(f"faithfulness units {kind!r} need (channels, time) inputs, got {shape}")
    if kind in ("features", "tokens") and len(shape) != 1:
        raise CerebroConfigError(f"faithfulness units {kind!r} need flat (features,) inputs, got {shape}")
    if kind == "patches" and len(shape) < 2:
        raise CerebroConfigError(f"faithfulness units 'patches' need (channels, *spatial) inputs, got {shape}")
    if kind in ("features", "tokens"):
        size: tuple[int, ...] = (1,)
    elif kind == "patches":
        spatial = shape[1:]
        side = patch or next(p for p in range(1, max(spatial) + 1)
                             if math.prod(math.ceil(s / p) for s in spatial) <= max_units)
        size = (shape[0], *(min(side, s) for s in spatial))
    else:
        c, t = shape
        w = min(t, window or max(1, t // 20))
        size = {"channels": (1, t), "time": (c, w), "blocks": (min(c, block_channels), w)}[kind]
    labels, n = _grid_labels(shape, size)
    return Units(labels, n, kind, size)


def maps_on_input(maps: Tensor, input_shape: Sequence[int]) -> Tensor | None:
    """Saved maps ``(b, *map)`` as ``(b, *input)`` values: input-shaped maps as they are, layer maps ``(b, 1, ...)``
    broadcast over the axes they do not resolve (channels); ``None`` when the map cannot be placed on the input."""
    shape = tuple(int(s) for s in input_shape)
    m = maps.reshape(maps.shape[0], *maps.shape[1:])
    if tuple(m.shape[1:]) == shape:
        return m
    if m.ndim >= 2 and m.shape[1] == 1:
        inner = tuple(m.shape[2:])
        if inner == shape:
            return m[:, 0]
        if 0 < len(inner) <= len(shape) and inner == shape[len(shape) - len(inner):]:
            view = (m.shape[0],) + (1,) * (len(shape) - len(inner)) + inner
            return m.reshape(view).expand(m.shape[0], *shape)
    return None


def unit_order(values: Tensor, units: Units, generator: torch.Generator) -> Tensor:
    """Units of each sample from the most to the least positive map total ``(b, n)``; equal totals (a map that does
    not resolve some axis) are ordered at random (seeded), never by position."""
    b = values.shape[0]
    scores = torch.zeros(b, units.n, dtype=torch.float64)
    scores.index_add_(1, units.labels.reshape(-1), values.reshape(b, -1).double().cpu())
    scores = torch.nan_to_num(scores, nan=-math.inf)
    shuffle = torch.stack([torch.randperm(units.n, generator=generator) for _ in range(b)])
    ranked = torch.argsort(-scores.gather(1, shuffle), dim=1, stable=True)
    return shuffle.gather(1, ranked)


def random_orders(indices: Sequence[int], n: int, seed: int, draw: int) -> Tensor:
    """Random order number ``draw`` of ``n`` units for each sample ``(b, n)``, seeded by the autopsy's seed and the
    sample's position, so it does not depend on how samples are blocked."""
    gens = [torch.Generator().manual_seed(seed * 7919 + draw * 1_000_003 + int(i)) for i in indices]
    return torch.stack([torch.randperm(n, generator=g) for g in gens])


def blur(x: Tensor, sigma: float, axes: Sequence[int]) -> Tensor:
    """Gaussian blur of ``x`` ``(b, *input)`` along the input ``axes`` (1-based in ``x``), reflect-padded."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    kernel = (k / k.sum()).to(x.device, torch.float32)
    out = x.float()
    for axis in axes:
        moved = out.movedim(axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        pad = min(radius, flat.shape[-1] - 1)
        padded = F.pad(flat, (pad, pad), mode="reflect") if pad > 0 else flat
        if pad < radius:
            padded = F.pad(padded, (radius - pad, radius - pad), mode="replicate")
        out = F.conv1d(padded, kernel.reshape(1, 1, -1)).reshape(moved.shape).movedim(-1, axis)
    return out.to(x.dtype)


def perturbation_curves(score: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, reference: Tensor,
                        index: Tensor | None, orders: Sequence[Tensor], units: Units, counts: Sequence[int],
                        policy: ChunkPolicy, check: Callable[[], None] = lambda: None) -> tuple[Tensor, Tensor]:
    """Deletion and insertion curves ``(k, b, steps)`` of ``k`` unit orders ``(b, n)`` of the samples ``x``.

    ``score(x, index) -> (B,)`` runs without gradients. Level ``j`` perturbs the first ``counts[j]`` units of each
    order; the two shared end points (the input itself, the full reference) are computed once per block.
    """
    b, k, steps = x.shape[0], len(orders), len(counts)
    labels = units.labels.reshape(-1).to(x.device)
    flat_x, flat_ref = x.reshape(b, -1), reference.expand_as(x).reshape(b, -1)
    ranks = torch.empty(k, b, units.n, dtype=torch.long)
    for o, order in enumerate(orders):  # rank of each unit in the order: perturbed at level j when rank < counts[j]
        ranks[o].scatter_(1, order.cpu(), torch.arange(units.n).expand(b, -1).contiguous())
    ranks = ranks.to(x.device)
    inner = [j for j in range(steps) if 0 < counts[j] < units.n]
    # point p = ((mode * k + order) * len(inner) + level) * b + sample; mode 0 = deletion, 1 = insertion
    total = 2 * k * len(inner) * b
    out = torch.empty(total, dtype=torch.float64)
    level_counts = torch.tensor([counts[j] for j in inner], dtype=torch.long, device=x.device)

    def run(first: int, size: int) -> Tensor:
        p = torch.arange(first, first + size, device=x.device)
        sample, rest = p % b, p // b
        level, rest = rest % len(inner), rest // len(inner)
        order, mode = rest % k, rest // k
        unit_rank = ranks[order, sample]  # (size, n)
        hit = unit_rank.gather(1, labels.expand(size, -1)) < level_counts[level].unsqueeze(1)
        mask = torch.where((mode == 0).unsqueeze(1), hit, ~hit)
        batch = torch.where(mask, flat_ref[sample], flat_x[sample]).reshape(size, *x.shape[1:])
        with torch.no_grad():
            return score(batch, None if index is None else index[sample]).double().cpu()

    done = 0
    while done < total:
        check()
        size, values = policy.run(total - done, lambda n, f=done: run(f, n))
        out[done : done + size] = values
        done += size
    with torch.no_grad():
        ends = score(torch.cat([x, reference.expand_as(x)]), None if index is None else torch.cat([index, index]))
    full, empty = ends[:b].double().cpu(), ends[b:].double().cpu()
    curves = torch.empty(2, k, b, steps, dtype=torch.float64)
    grid = out.reshape(2, k, len(inner), b).permute(0, 1, 3, 2)
    for pos, j in enumerate(inner):
        curves[:, :, :, j] = grid[..., pos]
    for j in range(steps):
        if counts[j] == 0:
            curves[0, :, :, j], curves[1, :, :, j] = full, empty
        elif counts[j] >= units.n:
            curves[0, :, :, j], curves[1, :, :, j] = empty, full
    return curves[0], curves[1]
