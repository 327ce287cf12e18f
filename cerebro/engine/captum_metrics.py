"""Captum's explanation metrics on a few samples: ``infidelity`` (Yeh et al., NeurIPS 2019, arXiv:1901.09392) of
saved maps, and ``sensitivity_max`` of an attribution method re-run on perturbed inputs. Both go through
``captum.metrics``; cerebro only supplies the perturbations, the target's scalar forward and the batch limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor

from cerebro.engine.context import AutopsyContext
from cerebro.engine.perturbation import maps_on_input
from cerebro.report.writer import DiagnosticOutput
from cerebro.samples import SampleSet

__all__ = ["noise_infidelity", "uniform_sensitivity", "rerun_explainer"]


def noise_infidelity(forward: Callable[..., Tensor], x: Tensor, maps: Tensor, index: Tensor | None, std: float,
                     n_perturb: int, max_batch: int) -> Tensor:
    """Captum's infidelity of ``maps`` (input-shaped) under Gaussian perturbations ``I ~ N(0, std^2)``:
    ``E[(I . map - (f(x) - f(x - I)))^2]`` with the optimal scale of the map (``normalize=True``), per sample."""

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn_like(inputs) * std
        return noise, inputs - noise

    args = None if index is None else (index,)
    max_batch = _batch(x.shape[0], n_perturb, max_batch)
    return infidelity(forward, perturb, x, maps.to(x.dtype), additional_forward_args=args,
                      n_perturb_samples=n_perturb, max_examples_per_batch=max_batch, normalize=True).detach()


def uniform_sensitivity(explain: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, index: Tensor | None,
                        radius: float, n_perturb: int, max_batch: int) -> Tensor:
    """Captum's ``sensitivity_max``: the largest relative change (Frobenius norm) of the map when the input moves
    uniformly within an L-infinity ball of ``radius``, per sample. ``explain(x, index) -> maps`` re-runs the method."""

    def perturb(inputs: Tensor, perturb_radius: float) -> Tensor:
        return inputs + (torch.rand_like(inputs) * 2 - 1) * perturb_radius

    def explanation(inputs: Tensor | tuple[Tensor, ...], additional_forward_args: Any = None) -> tuple[Tensor]:
        idx = None if additional_forward_args is None else additional_forward_args[0]
        with torch.enable_grad():  # Captum calls this under no_grad; gradient methods need autograd
            return (explain(inputs[0] if isinstance(inputs, tuple) else inputs, idx),)

    kwargs = {} if index is None else {"additional_forward_args": (index,)}
    max_batch = _batch(x.shape[0], n_perturb, max_batch)
    return sensitivity_max(explanation, x, perturb_func=perturb, perturb_radius=radius, n_perturb_samples=n_perturb,
                           max_examples_per_batch=max_batch, **kwargs).detach()


def _batch(n: int, n_perturb: int, limit: int) -> int:
    """Captum's batch rule: at least every sample once, at most every perturbation of every sample."""
    return max(n, min(n * n_perturb, limit))


def rerun_explainer(ctx: AutopsyContext, diag: Any, shape: tuple[int, ...]) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``explain(x, index) -> input-shaped maps`` re-running ``diag`` on the inputs ``x`` (for sensitivity_max)."""

    def explain(x: Tensor, index: Tensor | None) -> Tensor:
        samples = SampleSet(x=x.detach().cpu(), y=None, indices=np.arange(x.shape[0]))
        with torch.no_grad():
            outputs = ctx.model(x.detach()).detach().cpu()
        sub = AutopsyContext(model=ctx.model, target=ctx.target, samples=samples, device=ctx.device,
                             batch_size=ctx.batch_size, outputs=outputs, index=None if index is None else index.cpu(),
                             seed=ctx.seed, memory_budget=ctx.memory_budget)
        state = diag.start(sub, DiagnosticOutput(diag.name, None))  # type: ignore[arg-type]
        parts = [arrays["attributions"] for _, arrays in diag.blocks(sub, state, slice(0, sub.n))]
        return maps_on_input(torch.from_numpy(np.concatenate(parts)).float(), shape).to(x.device).contiguous()

    return explain
