"""Forward hooks held by one context manager that always releases them (the pytorch-grad-cam pattern)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from cerebro.errors import CerebroConfigError, suggest

__all__ = ["forward_hooks", "leaf_modules", "find_module", "tensor_output"]


@contextmanager
def forward_hooks(
    modules: Mapping[str, nn.Module], fn: Callable[[str, nn.Module, Any], None], inputs: bool = False
) -> Iterator[None]:
    """Call ``fn(name, module, output)`` after each module's forward while the block runs (with ``inputs=True``,
    its first positional input instead of its output); remove the hooks on exit, whatever happens."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda m, i, o, _n=name: fn(_n, m, i[0] if inputs and i else o)))
        yield
    finally:
        for h in handles:
            h.remove()


def leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Named modules without children (the layers that compute), excluding the root of a one-layer model."""
    leaves = {n: m for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    return leaves or {"": model}


def find_module(model: nn.Module, name: str, candidates: list[str] | None = None) -> nn.Module:
    """The submodule at dotted ``name``; a missing name lists candidates and suggests the nearest."""
    modules = dict(model.named_modules())
    if name not in modules:
        cands = candidates if candidates is not None else [n for n in modules if n]
        shown = cands[-12:]
        raise CerebroConfigError(
            f"layer {name!r} is not a submodule of {type(model).__name__}.{suggest(name, cands)} "
            f"Candidates: {shown}{' (last 12 shown)' if len(cands) > 12 else ''}"
        )
    return modules[name]


def tensor_output(output: Any) -> Tensor | None:
    """The tensor a layer returned, or ``None`` for tuples/dicts (e.g. an LSTM's ``(out, state)``)."""
    return output if isinstance(output, Tensor) else None
