"""``activations``: per-layer output statistics, dead units and saturation, streamed over the samples.

Statistics are kept per *call site*: a module object called at several places of one forward pass (one ``nn.ELU``
reused after layers of different shapes, as in braindecode's ATCNet/EEGTCNet) gets one entry per call, named
``elu#0``, ``elu#1``, ... in call order; a module called once keeps its plain name. A call site whose outputs cannot be
summarised (e.g. a shape that changes between batches) is named with its reason and the other layers still report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.context import AutopsyContext
from cerebro.engine.hooks import find_module, forward_hooks, leaf_modules, tensor_output
from cerebro.registry import register_diagnostic
from cerebro.report.figures import bar
from cerebro.report.writer import DiagnosticOutput

__all__ = ["Activations"]

# Output range of bounded activations: values within (1 - saturation) of a bound count as saturated.
_BOUNDS: dict[type[nn.Module], tuple[float, float]] = {
    nn.Tanh: (-1.0, 1.0), nn.Hardtanh: (-1.0, 1.0), nn.Softsign: (-1.0, 1.0),
    nn.Sigmoid: (0.0, 1.0), nn.Hardsigmoid: (0.0, 1.0),
}


@dataclass
class ActivationsOptions:
    #: Dotted layer names to watch; null watches every leaf layer.
    layers: Optional[List[str]] = None
    #: A layer is flagged dead when at least this fraction of its units (dim 1) is zero on every sample.
    dead_fraction: float = field(default=0.9, metadata={"min": 0.0})
    #: Bounded activations (tanh, sigmoid, ...) within (1 - saturation) of a bound count as saturated.
    saturation: float = field(default=0.99, metadata={"min": 0.0})
    #: A layer is flagged saturated when more than this fraction of its values is saturated.
    saturated_fraction: float = field(default=0.5, metadata={"min": 0.0})

#: Key of the hook on the model itself: it runs after every watched layer of a pass and resets the call counters.
_PASS_END = "\0end of forward pass"


class _Stats:
    """Running statistics of one layer's outputs, kept on the device (no host synchronisation per batch)."""

    def __init__(self, bounds: tuple[float, float] | None) -> None:
        self.bounds = bounds
        self.count = 0
        self.acc: dict[str, Tensor] = {}
        self.unit_max: Tensor | None = None

    def _add(self, key: str, value: Tensor) -> None:
        self.acc[key] = value if key not in self.acc else self.acc[key] + value

    def update(self, t: Tensor, sat: float) -> None:
        t = t.detach()
        units = t.abs().transpose(0, 1).reshape(t.shape[1], -1).amax(dim=1) if t.ndim >= 2 else t.abs().amax().reshape(1)
        if self.unit_max is not None and self.unit_max.shape != units.shape:  # never broadcast one unit onto many
            raise ValueError(f"its outputs have {units.numel()} units (dim 1) in this batch, {self.unit_max.numel()} "
                             "before")
        td = t.double()
        self.count += t.numel()
        self._add("sum", td.sum())
        self._add("sumsq", (td * td).sum())
        self._add("zeros", (t == 0).sum())
        self._add("nonfinite", (~torch.isfinite(t)).sum())
        if self.bounds is not None:
            lo, hi = self.bounds
            margin = (1.0 - sat) * (hi - lo) / 2 if lo < 0 else (1.0 - sat) * (hi - lo)
            self._add("saturated", ((t <= lo + margin) | (t >= hi - margin)).sum())
        self.unit_max = units if self.unit_max is None else torch.maximum(self.unit_max, units)

    def summary(self) -> dict[str, Any]:
        v = {k: float(a) for k, a in self.acc.items()}
        mean = v["sum"] / self.count
        var = max(v["sumsq"] / self.count - mean * mean, 0.0)
        assert self.unit_max is not None
        return {
            "mean": mean,
            "std": var**0.5,
            "zero_fraction": v["zeros"] / self.count,
            "dead_unit_fraction": float((self.unit_max == 0).double().mean()),
            "saturated_fraction": v["saturated"] / self.count if self.bounds is not None else None,
            "units": int(self.unit_max.numel()),
            "finite": v["nonfinite"] == 0,
        }


@register_diagnostic("activations")
class Activations(Diagnostic):
    """Streams each watched layer's outputs over the samples: mean, std, zeros, dead units and saturation."""

    Options = ActivationsOptions

    def check_model(self, model: nn.Module) -> None:
        for name in self.options.layers or []:
            find_module(model, name)

    def observe_forward(self, model: nn.Module) -> tuple[dict[str, nn.Module], Callable[[str, nn.Module, object], None]]:
        """Layers to watch and the hook that records them, attached to the runner's shared forward pass. One more
        hook on the model itself marks the end of each pass, so the call index of a reused module restarts at 0."""
        if self.options.layers:
            modules = {n: find_module(model, n) for n in self.options.layers}
        else:
            modules = leaf_modules(model)
        bounds = {n: next((b for c, b in _BOUNDS.items() if isinstance(m, c)), None) for n, m in modules.items()}
        self._order = list(modules)
        self._stats: dict[str, list[_Stats]] = {n: [] for n in modules}
        self._errors: dict[tuple[str, int], str] = {}
        calls: dict[str, int] = {}

        def record(name: str, _m: nn.Module, output: object) -> None:
            if name == _PASS_END:
                calls.clear()
                return
            k = calls.get(name, 0)
            calls[name] = k + 1
            sites = self._stats[name]
            if k == len(sites):
                sites.append(_Stats(bounds[name]))
            t = tensor_output(output)
            if (name, k) in self._errors or t is None or not t.is_floating_point() or not t.numel():
                return
            try:
                sites[k].update(t, self.options.saturation)
            except Exception as err:  # noqa: BLE001 - one call site fails, the other layers still report
                self._errors[(name, k)] = f"{type(err).__name__}: {err} (output shape {list(t.shape)})"

        return {**modules, _PASS_END: model}, record

    def _sites(self) -> list[tuple[str, str, int, _Stats]]:
        """``(site name, module name, call index, stats)`` in module order, then call order."""
        out = []
        for n in self._order:
            sites = self._stats[n]
            for k, s in enumerate(sites):
                out.append((f"{n}#{k}" if len(sites) > 1 else n, n, k, s))
        return out

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        shared = ctx.observed.pop(self.name, None) is not None
        if not shared:  # not observed by the runner's shared pass (e.g. called on its own): run one
            modules, record = self.observe_forward(ctx.model)
            with torch.no_grad(), forward_hooks(modules, record):
                for sl in ctx.chunks():
                    ctx.model(ctx.x(sl))
        out.metric("shared_pass", shared)
        sites, errors = self._sites(), self._errors
        self._stats, self._errors = {}, {}
        per_layer, failed, skipped = {}, {}, []
        for site, name, k, s in sites:
            if (name, k) in errors:
                failed[site] = errors[(name, k)]
            elif not s.count:
                skipped.append(site)
            else:
                try:
                    per_layer[site] = s.summary()
                except Exception as err:  # noqa: BLE001 - named below, the other layers still report
                    failed[site] = f"{type(err).__name__}: {err}"
        out.metric("per_layer", per_layer)
        out.metric("layers", len(per_layer))
        reused = sorted({name for site, name, _, _ in sites if site != name})
        if reused:
            out.metric("reused_modules", reused)
        if skipped:
            out.metric("layers_without_tensor_output", sorted(skipped))
        if failed:
            out.metric("layers_not_summarised", failed)
            shown = "; ".join(f"{n}: {why}" for n, why in list(failed.items())[:5])
            out.flag(f"activations: {len(failed)} layer call sites could not be summarised ({shown})")
        for n, s in per_layer.items():
            if s["dead_unit_fraction"] >= self.options.dead_fraction:
                out.flag(f"dead layer: {n} ({s['dead_unit_fraction']:.0%} of {s['units']} units never active)")
            if s["saturated_fraction"] is not None and s["saturated_fraction"] > self.options.saturated_fraction:
                out.flag(f"saturated layer: {n} ({s['saturated_fraction']:.0%} of values at a bound)")
            if not s["finite"]:
                out.flag(f"non-finite activations: {n}")
        names = list(per_layer)
        if names:
            out.figure(bar(names, [per_layer[n]["zero_fraction"] for n in names], "fraction of zero outputs per layer",
                           "zero fraction"), "zeros")
            out.figure(bar(names, [max(per_layer[n]["std"], 1e-12) for n in names], "output std per layer", "std",
                           log=True), "std")
            out.array("dead_unit_fraction", np.array([per_layer[n]["dead_unit_fraction"] for n in names]))
