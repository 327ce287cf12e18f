"""Target adapters: turn any model output into one scalar per sample, the quantity every attribution explains.

Captum itself recommends wrapping the forward function so that it returns the attribution targets instead of
passing ``target=`` (see ``captum._utils.common._select_targets``). :class:`ScalarForward` does exactly that, so a
``(B, 1)`` regression head, a ``(B,)`` head and ``(B, K)`` logits all reach Captum as a ``(B,)`` tensor.
Per-sample choices (the class to explain) travel as an additional forward argument, which Captum expands with
the batch when Integrated Gradients multiplies it by ``n_steps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from cerebro.errors import CerebroConfigError, choice_error

__all__ = ["TargetAdapter", "RegressionTarget", "ClassificationTarget", "ScalarForward", "build_target", "TARGETS"]


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _require_tensor(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise CerebroConfigError(
            f"the model returned {type(output).__name__}, but cerebro needs its forward to return one tensor; "
            "wrap the model so that forward(x) returns the prediction tensor"
        )
    return output


class TargetAdapter:
    """Maps a model output to one scalar per sample. Subclasses declare ``kind`` and their options."""

    kind: ClassVar[str] = ""

    def preflight(self, output: Any, y: Tensor | None) -> None:
        """Check one batch of real output (and labels) against this adapter; raise a clear error on mismatch."""

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor | None:
        """Per-sample choice passed to :meth:`select` (e.g. the class to explain), or ``None``."""
        return None

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        """Return the ``(B,)`` scalars to explain."""
        raise NotImplementedError

    def labels(self, y: Tensor) -> Tensor:
        """Labels in the shape :meth:`predictions` compares against."""
        return y

    def predictions(self, output: Tensor) -> Tensor:
        """Per-sample prediction (regression value or predicted class)."""
        raise NotImplementedError

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """Default per-sample loss for this kind of target (used when the module has no usable loss)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Options for ``summary.json``."""
        return {"kind": self.kind}


@dataclass
class RegressionTarget(TargetAdapter):
    """Regression: outputs ``(B,)``, ``(B, 1)``, or ``(B, K)`` with ``index`` choosing the output to explain."""

    index: int | None = None
    kind: ClassVar[str] = "regression"

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        fix = "set target: {kind: regression, index: k}"
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            if self.index not in (None, 0):
                raise CerebroConfigError(f"target index {self.index} is out of range for output shape {_shape(out)}")
        elif out.ndim == 2:
            if self.index is None:
                raise CerebroConfigError(
                    f"regression target got output shape {_shape(out)} with {out.shape[1]} outputs; choose one: {fix} "
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


_CLASS_CHOICES = ("predicted", "label")
_SCORES = ("logit", "probability", "log_probability")


@dataclass
class ClassificationTarget(TargetAdapter):
    """Classification logits ``(B, K)``: explain the ``class`` (predicted | label | an int) ``score``."""

    class_: str | int = "predicted"
    score: str = "logit"
    kind: ClassVar[str] = "classification"

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
        if y is not None and not y.is_floating_point():
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


TARGETS: dict[str, type[TargetAdapter]] = {"regression": RegressionTarget, "classification": ClassificationTarget}
_OPTIONS = {"regression": {"index": "index"}, "classification": {"class": "class_", "score": "score"}}


def build_target(spec: str | Mapping[str, Any] | TargetAdapter) -> TargetAdapter:
    """Build an adapter from ``"regression"``, ``{kind: classification, class: label}`` or an adapter instance."""
    if isinstance(spec, TargetAdapter):
        return spec
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)  # type: ignore[assignment]
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise CerebroConfigError(f"`target` must be a name or a mapping with `kind`, got {type(spec).__name__}: {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in TARGETS:
        raise choice_error("target.kind", kind, TARGETS)
    allowed = _OPTIONS[kind]
    kwargs = {}
    for key, value in spec.items():
        if key not in allowed:
            raise choice_error(f"target option for {kind}", key, allowed)
        kwargs[allowed[key]] = value
    if kind == "regression" and kwargs.get("index") is not None:
        idx = kwargs["index"]
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise CerebroConfigError(f"`target.index` must be a non-negative int, got {idx!r}")
    return TARGETS[kind](**kwargs)


class ScalarForward(nn.Module):
    """``forward(x, index=None) -> (B,)``: the model followed by its target adapter, ready for Captum."""

    def __init__(self, model: nn.Module, adapter: TargetAdapter) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        return self.adapter.select(self.model(x), index)
