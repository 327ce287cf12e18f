"""A user function as the target (``_target_: my_module.fn``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from cerebro.errors import CerebroConfigError
from cerebro.targets.base import TargetAdapter, _require_tensor, _shape

__all__ = ["CallableTarget"]


@dataclass
class CallableTarget(TargetAdapter):
    """A user function ``fn(model_output, batch) -> (B,)``; ``batch`` is a dict with the labels under ``"target"``
    (repeated with the output when attribution methods expand the batch)."""

    fn: Callable[..., Tensor] = None  # type: ignore[assignment]
    path: str = ""
    kind: ClassVar[str] = "callable"

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor | None:
        return y

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        value = self.select(out, None if y is None else y[: out.shape[0]])
        if not isinstance(value, Tensor) or tuple(value.shape) != (out.shape[0],):
            raise CerebroConfigError(f"target {self.path} must return one scalar per sample, shape ({out.shape[0]},); "
                                     f"it returned {_shape(value)} for outputs {_shape(out)}")

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        return self.fn(output, {} if index is None else {"target": index.to(output.device)})

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "_target_": self.path}


def _callable_target(spec: dict[str, Any]) -> CallableTarget:
    from hydra.utils import get_method

    path = spec.pop("_target_")
    bad = [k for k in spec if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise CerebroConfigError(f"target `_target_: {path}` takes keyword arguments, got keys {bad!r}")
    try:
        fn = get_method(path)
    except Exception as err:  # noqa: BLE001 - hydra raises several types for bad paths
        raise CerebroConfigError(f"target `_target_: {path}` cannot be imported: {err}") from err
    return CallableTarget(fn=functools.partial(fn, **spec) if spec else fn, path=path)
