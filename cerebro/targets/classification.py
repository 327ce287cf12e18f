"""Classification targets: explain one class score (predicted class, label or a fixed class) of ``(B, K)`` logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cerebro.errors import CerebroConfigError, choice_error
from cerebro.targets.base import TargetAdapter, _require_tensor, _shape

__all__ = ["ClassificationTarget"]


_CLASS_CHOICES = ("predicted", "label")
_SCORES = ("logit", "probability", "log_probability")


@dataclass
class ClassificationTarget(TargetAdapter):
    """Classification logits ``(B, K)``: explain the ``class`` (predicted | label | an int) ``score``."""

    class_: str | int = "predicted"
    score: str = "logit"
    kind: ClassVar[str] = "classification"
    supervised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.class_, bool) or not (isinstance(self.class_, int) or self.class_ in _CLASS_CHOICES):
            raise choice_error("target.class", self.class_, [*_CLASS_CHOICES, "<int>"])
        if self.score not in _SCORES:
            raise choice_error("target.score", self.score, _SCORES)

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        if out.ndim != 2 or out.shape[1] < 2:
            raise CerebroConfigError(
                f"classification target expects logits of shape (B, K) with K >= 2; the model returned {_shape(out)}. "
                "For a single logit or a value use target: regression"
            )
        k = out.shape[1]
        if isinstance(self.class_, int) and not 0 <= self.class_ < k:
            raise CerebroConfigError(f"target class {self.class_} is out of range for {k} classes")
        if self.class_ == "label":
            if y is None:
                raise CerebroConfigError("target class 'label' needs labels, but the batches carry none; use class: predicted")
            if y.is_floating_point() or y.is_complex():
                raise CerebroConfigError(
                    f"target class 'label' needs integer class labels, got {y.dtype} labels of shape {_shape(y)}; "
                    "cast them to long in the dataset or use class: predicted"
                )
        if y is not None and (y.is_floating_point() or y.is_complex()):
            # Float labels are class indices only if they hold one whole number per sample (e.g. 2.0); continuous
            # values, one-hot or probability rows would be silently truncated by .long() into wrong classes.
            flat = y.reshape(-1)
            whole = not y.is_complex() and flat.numel() == out.shape[0] and bool(torch.isfinite(flat).all()) \
                and bool((flat == flat.round()).all())
            if not whole:
                odd = flat[~torch.isfinite(flat) | (flat != flat.round())][:1].tolist() if not y.is_complex() else []
                raise CerebroConfigError(
                    f"classification target needs one class index per sample, got {y.dtype} labels of shape "
                    f"{_shape(y)} for output {_shape(out)}"
                    + (f" with non-integer values such as {odd[0]!r}" if odd else "")
                    + "; cast class labels to long in the dataset (argmax of one-hot rows), "
                    "or use target: regression for continuous labels")
        if y is not None:
            flat = y.reshape(-1)
            if flat.numel() != out.shape[0] or int(flat.min()) < 0 or int(flat.max()) >= k:
                raise CerebroConfigError(f"labels {_shape(y)} with values in [{int(flat.min())}, {int(flat.max())}] "
                                         f"do not match {k} classes of output {_shape(out)}")

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor:
        if self.class_ == "predicted":
            return output.argmax(dim=1)
        if self.class_ == "label":
            assert y is not None
            return y.reshape(-1).long().to(output.device)
        return torch.full((output.shape[0],), int(self.class_), dtype=torch.long, device=output.device)

    def _scores(self, output: Tensor) -> Tensor:
        if self.score == "probability":
            return output.softmax(dim=1)
        if self.score == "log_probability":
            return output.log_softmax(dim=1)
        return output

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            index = self.per_sample_index(output, None)
        return self._scores(output).gather(1, index.reshape(-1, 1).to(output.device)).squeeze(1)

    def labels(self, y: Tensor) -> Tensor:
        return y.reshape(-1).long()

    def predictions(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), self.labels(y).to(output.device), reduction="none")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": self.class_, "score": self.score}
