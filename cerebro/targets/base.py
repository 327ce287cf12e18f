"""The target adapter interface, output picking and :class:`ScalarForward` (the model followed by its adapter)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from cerebro.errors import CerebroConfigError

__all__ = ["pick_output", "TargetAdapter", "ScalarForward"]


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _tensor_fields(output: Any) -> list[tuple[str, str]]:
    """The tensors in a tuple, dict or output object, as ``(accessor, shape)``, e.g. ``("['logits']", "(2, 3)")``."""
    if isinstance(output, (tuple, list)):
        items = [(f"[{i}]", v) for i, v in enumerate(output)]
    elif isinstance(output, Mapping):
        items = [(f"[{k!r}]", v) for k, v in output.items()]
    else:
        items = [(f".{k}", v) for k, v in (vars(output).items() if hasattr(output, "__dict__") else ())]
    return [(acc, _shape(v)) for acc, v in items if isinstance(v, Tensor)]


def _require_tensor(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        fields = _tensor_fields(output)
        held = f" holding tensors {', '.join(f'out{a} {s}' for a, s in fields[:8])}" if fields else ""
        example = f", e.g. `return self.model(x){fields[0][0]}`" if fields else ""
        raise CerebroConfigError(
            f"the model returned {type(output).__name__}{held}, but cerebro needs its forward to return one tensor; "
            f"set output_key to pick it, or wrap the model in an nn.Module whose forward(x) returns the prediction "
            f"tensor{example}"
        )
    return output


def pick_output(output: Any, key: int | str) -> Any:
    """``output[key]`` of a tuple/list (position), mapping (key) or output object (attribute): ``output_key``."""
    try:
        if isinstance(key, int) and isinstance(output, (tuple, list)):
            return output[key]
        if isinstance(key, str) and isinstance(output, Mapping) and key in output:
            return output[key]
        if isinstance(key, str) and not isinstance(output, Mapping) and hasattr(output, key):
            return getattr(output, key)
    except IndexError:
        pass
    fields = _tensor_fields(output)
    raise CerebroConfigError(
        f"output_key {key!r} is not in the model's {type(output).__name__} output; it holds "
        f"{', '.join(f'out{a} {s}' for a, s in fields[:8]) or 'no tensors'}")


class TargetAdapter:
    """Maps a model output to one scalar per sample. Subclasses declare ``kind`` and their options."""

    kind: ClassVar[str] = ""

    def preflight(self, output: Any, y: Tensor | None) -> None:
        """Check one batch of real output (and labels) against this adapter; raise a clear error on mismatch."""

    #: Whether predictions compare with labels (prediction metrics, failure modes, a default loss).
    supervised: ClassVar[bool] = False

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor | None:
        """Per-sample choice passed to :meth:`select` (e.g. the class to explain), or ``None``."""
        return None

    def batch_inputs(self) -> tuple[int | str, ...]:
        """Batch fields (tuple positions or dict keys) this target needs besides the input, e.g. a reference."""
        return ()

    def per_sample_arg(self, outputs: Tensor, samples: Any, embed: Callable[[Tensor], Tensor]) -> Tensor | None:
        """The per-sample argument of :meth:`select` for every sample (``embed`` runs the model without gradients).
        Captum and the engine repeat it with the batch, so it never has to be captured in a closure."""
        return self.per_sample_index(outputs, samples.y)

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        """Return the ``(B,)`` scalars to explain."""
        raise NotImplementedError

    def labels(self, y: Tensor) -> Tensor:
        """Labels in the shape :meth:`predictions` compares against."""
        return y

    def predictions(self, output: Tensor) -> Tensor:
        """Per-sample prediction (regression value or predicted class); supervised targets only."""
        raise NotImplementedError(f"target {self.kind} makes no predictions to compare with labels")

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """Default per-sample loss for this kind of target (used when the module has no usable loss)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Options for ``summary.json``."""
        return {"kind": self.kind}


class ScalarForward(nn.Module):
    """``forward(x, index=None) -> (B,)``: the model followed by its target adapter, ready for Captum."""

    def __init__(self, model: nn.Module, adapter: TargetAdapter) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        return self.adapter.select(self.model(x), index)
