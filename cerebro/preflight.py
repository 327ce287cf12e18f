"""The setup-time target check: one real batch through the live module before the first training step.

A target kind that does not fit the model's output (the default ``regression`` on a 10-class classifier, a
``classification`` target on a ``(B, 1)`` regressor, an ``index`` out of range, an ``input_key`` that is not in the
batch) would otherwise only be found by the autopsy, after training. :func:`check_target_on_batch` runs the same
check as the autopsy (``TargetAdapter.preflight``) on the first two samples of the batch, without gradients, in
eval mode, with every random number generator restored afterwards, so the training that follows is the one that
would have run without cerebro.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn

from cerebro import adapters
from cerebro.samples import BatchSpec
from cerebro.targets import TargetAdapter, pick_output

__all__ = ["check_target_on_batch", "first_batch"]


def _isolated_rng() -> Any:
    """Lightning's ``isolate_rng``; the CUDA generators only once CUDA is initialised (reading them would
    initialise it, which a process that forks afterwards cannot undo)."""
    return isolate_rng(include_cuda=torch.cuda.is_initialized())


def first_batch(loader: Any) -> Any:
    """The loader's first batch, with the random number generators left as they were (a shuffling sampler draws its
    seed from torch's generator when iterated)."""
    with _isolated_rng():
        return next(iter(loader))


def check_target_on_batch(model: nn.Module, batch: Any, spec: BatchSpec, target: TargetAdapter,
                          output_key: int | str | None) -> None:
    """Run ``target.preflight`` on ``model``'s output for the first two samples of ``batch``.

    Raises:
        CerebroConfigError: the target does not fit the output (the message names the kind that does), or the
            batch has no field ``spec.input_key``/``spec.target_key``.
    """
    x, y, _ = spec.split(batch)
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        return
    param = next(model.parameters(), None)
    x = x[:2].to(param.device) if param is not None else x[:2]
    y = y[: x.shape[0]] if isinstance(y, Tensor) and y.ndim else None
    modes = [(m, m.training) for m in model.modules()]  # per module: a backbone frozen in eval mode stays so
    model.eval()
    try:
        with _isolated_rng(), torch.no_grad():
            out = model(x)
    finally:
        for m, training in modes:
            m.training = training
    key = output_key if output_key is not None else adapters.output_key(model, out)
    target.preflight(out if key is None else pick_output(out, key), y)
