"""Reference inputs of path and difference methods (IG, DeepLIFT, layer IG, conductance, GradientShap)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cerebro.errors import CerebroConfigError

__all__ = ["make_baseline", "chunk_baseline", "input_baseline"]


def make_baseline(spec: str, x: Any, chunk: int = 256, owner: str = "integrated_gradients") -> Tensor:
    """Baseline of shape ``(1, *input)`` or ``(N, *input)`` for the samples ``x`` (a tensor or a RowTensor);
    ``owner`` names the diagnostic in error messages."""
    n, shape = int(x.shape[0]), tuple(x.shape[1:])
    if spec == "zeros":
        return torch.zeros((1, *shape), dtype=x.dtype)
    if spec == "mean":
        total = torch.zeros(shape, dtype=torch.float64)
        for i in range(0, n, chunk):
            total += x[i : i + chunk].double().sum(dim=0)
        return (total / n).to(x.dtype).unsqueeze(0)
    if not os.path.isfile(spec):
        raise CerebroConfigError(f"{owner}.baseline {spec!r} is neither zeros|mean nor an existing file")
    data = np.load(spec) if spec.endswith(".npy") else torch.load(spec, map_location="cpu", weights_only=True)
    base = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data, dtype=x.dtype)
    if tuple(base.shape) == shape:
        return base.unsqueeze(0)
    if tuple(base.shape) == (n, *shape):
        return base
    raise CerebroConfigError(
        f"baseline file {spec!r} has shape {tuple(base.shape)}; expected the input shape {shape} "
        f"or one per sample {(n, *shape)}"
    )


def chunk_baseline(baseline: Tensor, x: Tensor, sl: slice) -> Tensor:
    """The baseline of the chunk ``x`` (samples ``sl``): one shared ``(1, ...)`` baseline or per-sample rows."""
    return (baseline if baseline.shape[0] == 1 else baseline[sl]).to(x.device).expand_as(x)


def input_baseline(ctx: Any, spec: str, owner: str) -> Tensor:
    """The baseline of a gradient method for the context's samples: :func:`make_baseline` on float inputs; on
    token ids the embedding of ``tokens.baseline`` (pad | mask | id | zeros) at every position ``(1, T, D)``,
    which the method's own ``zeros`` default stands for (other values apply to float inputs only)."""
    if ctx.tokens is None:
        return make_baseline(spec, ctx.samples.x, owner=owner)
    if spec != "zeros":
        raise CerebroConfigError(
            f"{owner}.baseline {spec!r} applies to float inputs; on token ids the baseline is the embedding of "
            f"tokens.baseline (pad | mask | <token id> | zeros): leave {owner}.baseline at zeros and set tokens.baseline")
    return ctx.tokens.baseline(ctx.model, ctx.x(slice(0, 1)), owner).cpu()
