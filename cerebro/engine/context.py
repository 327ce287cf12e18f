"""The :class:`AutopsyContext` every diagnostic receives: model copy, samples, target and the shared forward pass."""

from __future__ import annotations

import time

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cerebro.engine.budget import chunks
from cerebro.engine.distributed import SINGLE, Comm
from cerebro.engine.hooks import forward_hooks
from cerebro.samples import SampleSet
from cerebro.targets import ScalarForward, TargetAdapter

__all__ = ["AutopsyContext", "DiagnosticTimeout", "compute_outputs", "find_module_loss"]


@torch.no_grad()
def compute_outputs(model: nn.Module, x: Any, batch_size: int, device: torch.device,
                    observers: Iterable[tuple[str, Any]] = ()) -> tuple[Tensor, dict[str, Any]]:
    """The shared forward pass over all samples, in chunks: raw outputs on the CPU, and for each observing
    diagnostic ``(name, (modules, hook))`` either ``True`` (its hooks saw every sample) or the error its hook raised."""
    status: dict[str, Any] = {}
    with ExitStack() as stack:
        for name, (modules, fn) in observers:
            status[name] = True

            def safe(n: str, m: nn.Module, o: Any, _fn: Any = fn, _name: str = name) -> None:
                if status[_name] is True:
                    try:
                        _fn(n, m, o)
                    except Exception as err:  # noqa: BLE001 - a hook's failure is that diagnostic's failure only
                        status[_name] = err

            stack.enter_context(forward_hooks(modules, safe))
        outs = [model(x[sl].to(device)).detach().cpu() for sl in chunks(int(x.shape[0]), batch_size)]
    return torch.cat(outs), status


def find_module_loss(model: nn.Module) -> tuple[str, Callable[[Tensor, Tensor], Tensor]] | None:
    """The module's own loss (``loss_fn``, ``criterion``, ``loss_function`` or ``loss_func`` attribute), if any."""
    for attr in ("loss_fn", "criterion", "loss_function", "loss_func"):
        fn = getattr(model, attr, None)
        if callable(fn):
            return attr, fn
    return None


class DiagnosticTimeout(TimeoutError):
    """A diagnostic ran past its ``time_budget_s`` (or the autopsy's ``total_time_budget_s``)."""


@dataclass
class AutopsyContext:
    """Everything a diagnostic may use. ``outputs``/``scores``/``index`` come from one shared forward pass."""

    model: nn.Module
    target: TargetAdapter
    samples: SampleSet
    device: torch.device
    batch_size: int
    outputs: Tensor
    index: Tensor | None
    seed: int = 0
    memory_budget: int = 1 << 30
    extras: dict[str, Any] = field(default_factory=dict)
    #: Diagnostics whose :meth:`~cerebro.Diagnostic.observe_forward` hooks saw the shared pass (or their error).
    observed: dict[str, Any] = field(default_factory=dict)
    #: Ranks of a DDP autopsy (a single process by default).
    comm: Comm = SINGLE
    #: ``time.monotonic()`` after which the running diagnostic stops at its next check (its time budget), and why.
    deadline: float | None = None
    deadline_reason: str = ""
    #: Token-id inputs (:class:`~cerebro.adapters.tokens.TokenInputs`): gradient methods attribute at the input
    #: embedding's output through the ``grad_*`` view below; ``None`` for float inputs.
    tokens: Any = None

    def __post_init__(self) -> None:
        self.forward = ScalarForward(self.model, self.target)
        self.scores = self.target.select(self.outputs, self.index).detach()

    @property
    def grad_forward(self) -> nn.Module:
        """Forward function of gradient methods: :attr:`forward`, or on token ids the model with its embedding output
        replaced by the attributed float input, ``(embeddings, ids, index)``."""
        return self.forward if self.tokens is None else self.tokens.forward(self.model, self.target)

    def grad_x(self, sl: slice) -> Tensor:
        """Float inputs of gradient methods: :meth:`x`, or on token ids their embeddings ``(B, T, D)``."""
        return self.x(sl) if self.tokens is None else self.tokens.embed(self.model, self.x(sl))

    def grad_args(self, sl: slice) -> tuple[Tensor, ...] | None:
        """``additional_forward_args`` of :attr:`grad_forward` for the samples ``sl``."""
        if self.tokens is None:
            return self.forward_args(sl)
        return (self.x(sl), *(self.forward_args(sl) or ()))

    def grad_index(self, sl: slice) -> Any:
        """The per-sample argument of :attr:`grad_forward` for the batched IG engine (indexed per point)."""
        index = None if self.index is None else self.index[sl].to(self.device)
        if self.tokens is None:
            return index
        from cerebro.adapters.tokens import TokenArgs

        return TokenArgs(self.x(sl), index)

    def input_maps(self, attr: Tensor) -> dict[str, Tensor]:
        """Stored maps of an input attribution from :meth:`grad_x`: as is, or on token ids one value per token
        ``(B, T)`` (plus ``attributions_per_dimension`` when asked)."""
        return {"attributions": attr} if self.tokens is None else self.tokens.per_token(attr)

    def check_deadline(self) -> None:
        """Raise :class:`DiagnosticTimeout` once the running diagnostic's time budget is spent. Long diagnostics
        call it between blocks of work, so a timeout stops them cleanly between two chunks."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DiagnosticTimeout(self.deadline_reason)

    @property
    def n(self) -> int:
        return self.samples.n

    @property
    def has_labels(self) -> bool:
        return self.samples.y is not None

    def labels(self) -> Tensor:
        assert self.samples.y is not None
        return self.target.labels(self.samples.y)

    def predictions(self) -> Tensor:
        """Predicted value or class (supervised targets), else the scalar being explained."""
        return self.target.predictions(self.outputs) if self.target.supervised else self.scores

    def chunks(self, size: int | None = None) -> Iterator[slice]:
        yield from chunks(self.n, size or self.batch_size)

    def x(self, sl: slice) -> Tensor:
        return self.samples.x[sl].to(self.device)

    def y(self, sl: slice) -> Tensor | None:
        return None if self.samples.y is None else self.samples.y[sl].to(self.device)

    def forward_args(self, sl: slice) -> tuple[Tensor, ...] | None:
        """``additional_forward_args`` for Captum: the per-sample target index, when the target has one."""
        return None if self.index is None else (self.index[sl].to(self.device),)
