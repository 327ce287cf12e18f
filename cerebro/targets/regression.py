"""Regression targets: one value per sample, or one chosen output of a multi-output head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from cerebro.errors import CerebroConfigError
from cerebro.targets.base import TargetAdapter, _require_tensor, _shape

__all__ = ["RegressionTarget"]


@dataclass
class RegressionTarget(TargetAdapter):
    """Regression: outputs ``(B,)``, ``(B, 1)``, or ``(B, K)`` with ``index`` choosing the output to explain."""

    index: int | None = None
    kind: ClassVar[str] = "regression"
    supervised: ClassVar[bool] = True

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        fix = "set target: {kind: regression, index: k}"
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            if self.index not in (None, 0):
                raise CerebroConfigError(f"target index {self.index} is out of range for output shape {_shape(out)}")
        elif out.ndim == 2:
            if self.index is None:
                raise CerebroConfigError(
                    f"regression target got output shape {_shape(out)} with {out.shape[1]} outputs: if they are class "
                    f"logits, set target: classification; for {out.shape[1]} regression outputs, choose one: {fix} "
                    f"with k in [0, {out.shape[1]})"
                )
            if not 0 <= self.index < out.shape[1]:
                raise CerebroConfigError(f"target index {self.index} is out of range for output shape {_shape(out)}")
        else:
            raise CerebroConfigError(
                f"regression target expects outputs of shape (B,), (B, 1) or (B, K); the model returned {_shape(out)}. "
                "Use target: classification for logits, or a model head that returns one value per sample"
            )
        if y is not None:
            per = y.reshape(y.shape[0], -1).shape[1] if y.ndim else 0
            k = 1 if out.ndim == 1 else out.shape[1]
            if y.ndim == 0 or per not in (1, k):
                raise CerebroConfigError(f"labels of shape {_shape(y)} do not match regression outputs {_shape(out)}")

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        return output if output.ndim == 1 else output[:, self.index or 0]

    def labels(self, y: Tensor) -> Tensor:
        y = y.reshape(y.shape[0], -1).float()
        return y[:, 0] if y.shape[1] == 1 else y[:, self.index or 0]

    def predictions(self, output: Tensor) -> Tensor:
        return self.select(output).float()

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return (self.predictions(output) - self.labels(y).to(output.device)) ** 2

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index}
