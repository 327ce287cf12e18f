"""Where the autopsy runs: :func:`resolve_device`, the one place a ``device`` option becomes a ``torch.device``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cerebro.errors import CerebroConfigError

__all__ = ["resolve_device", "auto_device", "device_error_reason"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def auto_device() -> torch.device:
    """The fastest device this machine has: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: Any, model: nn.Module | None = None) -> torch.device:
    """``None``: the model's device (CPU for a parameterless model); ``"auto"``: :func:`auto_device`; else a valid
    ``torch.device`` that this machine has."""
    if device is None:
        p = next(iter(model.parameters()), None) if model is not None else None
        return p.device if p is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return auto_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CerebroConfigError(f"`device` must be None, 'auto' or a torch device such as 'cpu', 'cuda:0' or 'mps', "
                                 f"got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CerebroConfigError(f"`device` is {device!r} but CUDA is not available on this machine "
                                 "(device: auto picks cuda, then mps, then cpu)")
    if dev.type == "mps" and not _mps_available():
        raise CerebroConfigError(f"`device` is {device!r} but Apple's MPS is not available on this machine "
                                 "(device: auto picks cuda, then mps, then cpu)")
    return dev


def device_error_reason(err: BaseException, device: torch.device | None) -> str | None:
    """A reason that names the fix for an operation the device does not support (MPS), else ``None``."""
    text = str(err)
    if device is None or device.type != "mps" or not isinstance(err, (NotImplementedError, RuntimeError)):
        return None
    if "MPS" not in text and "mps" not in text:
        return None
    op = text.split("'")[1] if text.count("'") >= 2 else "an operation"
    return (f"{type(err).__name__}: {op} is not supported on Apple's MPS device ({text.splitlines()[0][:200]}); "
            "run this autopsy with device: cpu, or set the environment variable PYTORCH_ENABLE_MPS_FALLBACK=1 "
            "to run unsupported operations on the CPU")
