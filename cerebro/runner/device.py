"""Where the autopsy runs: :func:`resolve_device`, the one place a ``device`` option becomes a ``torch.device``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cerebro.errors import CerebroConfigError

__all__ = ["resolve_device"]


def resolve_device(device: Any, model: nn.Module | None = None) -> torch.device:
    """``None``: the model's device (CPU for a parameterless model); else a valid ``torch.device``."""
    if device is None:
        p = next(iter(model.parameters()), None) if model is not None else None
        return p.device if p is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CerebroConfigError(f"`device` must be None or a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CerebroConfigError(f"`device` is {device!r} but CUDA is not available on this machine")
    return dev
