"""``sanity_checks``: do the attribution maps of this run depend on the model at all?

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018 (arXiv:1810.03292):
- cascading model-parameter randomization: the model's parameters are re-drawn stage by stage from the output down
  (on a copy), and each attribution method's maps are compared with its original maps by Spearman rank correlation
  of their absolute values; maps that barely change explain the input, not the model. By default a stage is a group
  of top-level blocks (the model's children, repeated blocks such as a ViT's ``blocks.0``..``blocks.11`` one by one),
  at most ``max_stages`` stages, the last one randomizing every parameter; ``mode: layers`` re-draws one layer with
  parameters per stage (the paper's figure, one recomputation of every method per layer). The original maps are
  read back from the checked diagnostics' own arrays when they ran on the same samples, so the checks cost
  ``stages`` (+1 with target randomization) recomputations of each method on ``samples`` samples;
- target randomization (classification): maps of a random other class should differ from the explained class's;
- completeness of Integrated Gradients: sum of attributions vs f(x) - f(baseline);
- degenerate maps (constant, all zero, NaN).
Every failed check is a flag in ``summary.json`` (and in the report), never silent.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.attribution import MapStats
from cerebro.engine.context import AutopsyContext
from cerebro.engine.ranks import mean_abs_spearman
from cerebro.errors import DiagnosticSkipped
from cerebro.registry import register_diagnostic
from cerebro.report.figures import new_figure
from cerebro.report.writer import DiagnosticOutput
from cerebro.samples import SampleSet

__all__ = ["SanityChecks", "spearman"]


@dataclass
class SanityChecksOptions:
    #: Samples the checks recompute every method on.
    samples: int = field(default=8, metadata={"min": 2})
    #: A method passes model randomization when its maps' rank correlation with the originals, once every
    #: randomized layer is re-drawn, is below this.
    max_correlation: float = field(default=0.5, metadata={"min": 0.0})
    #: groups: cascade over top-level blocks (cheap, the default) | layers: one layer with parameters per stage.
    mode: str = field(default="groups", metadata={"choices": ("groups", "layers")})
    #: groups mode: most randomization stages (each recomputes every method once); the last stage randomizes all.
    max_stages: int = field(default=3, metadata={"min": 1})
    #: layers mode: how many layers (from the output down) to randomize; null = every layer with parameters.
    layers: Optional[int] = field(default=None, metadata={"min": 1})
    #: Adaptive IG on a randomized model stops at this many steps (its completeness is not checked there).
    randomized_max_steps: int = field(default=15, metadata={"min": 1})
    #: IG completeness: flag when the median |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)| exceeds this.
    completeness_tolerance: float = field(default=0.05, metadata={"min": 0.0})


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the Spearman rank correlation of ``|a|`` and ``|b|`` (average ranks for ties, so the
    pixels that are zero in both maps do not agree by their position)."""
    return mean_abs_spearman(a, b)


def _subset(ctx: AutopsyContext, k: int, model: nn.Module, index: torch.Tensor | None) -> AutopsyContext:
    s = ctx.samples
    sub = SampleSet(x=s.x[0:k], y=None if s.y is None else s.y[:k], indices=s.indices[:k],
                    extras={n: v[:k] for n, v in s.extras.items()})
    return AutopsyContext(model=model, target=ctx.target, samples=sub, device=ctx.device, batch_size=ctx.batch_size,
                          outputs=ctx.outputs[:k], index=index, seed=ctx.seed, memory_budget=ctx.memory_budget,
                          tokens=ctx.tokens)


def _maps(diag: AttributionDiagnostic, ctx: AutopsyContext) -> dict[str, np.ndarray]:
    """Every per-sample array ``diag`` produces on ``ctx``'s samples, in memory."""
    state = diag.start(ctx, DiagnosticOutput(diag.name, None))  # type: ignore[arg-type]
    parts: dict[str, list[np.ndarray]] = {}
    for _, arrays in diag.blocks(ctx, state, slice(0, ctx.n)):
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _layers_top_down(model: nn.Module) -> list[str]:
    return [n for n, m in reversed(list(model.named_modules()))
            if n and not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))]


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _repeated(m: nn.Module) -> bool:
    """A container of repeated blocks (a ModuleList, or a Sequential whose parameterised children share a class)."""
    kids = [c for c in m.children() if _has_params(c)]
    if isinstance(m, nn.ModuleList):
        return len(kids) > 1
    return isinstance(m, nn.Sequential) and len(kids) > 1 and len({type(c) for c in kids}) == 1


def layer_groups(model: nn.Module) -> list[str]:
    """Parameter groups of ``model`` from the input up: its children with parameters (through single wrappers),
    containers of repeated blocks split into their blocks; ``""`` stands for the model's own parameters
    (e.g. a ViT's class token and position embedding), placed at the input."""
    prefix, module = "", model
    while True:
        kids = [(n, m) for n, m in module.named_children() if _has_params(m)]
        if len(kids) == 1 and not any(True for _ in module.parameters(recurse=False)):
            prefix, module = f"{prefix}{kids[0][0]}.", kids[0][1]
            continue
        break
    groups = [prefix[:-1] if prefix else ""] if any(True for _ in module.parameters(recurse=False)) else []
    for n, m in kids:
        if _repeated(m):
            groups += [f"{prefix}{n}.{c}" for c, sub in m.named_children() if _has_params(sub)]
        else:
            groups.append(f"{prefix}{n}")
    return groups


def randomization_stages(model: nn.Module, mode: str, max_stages: int, layers: int | None
                         ) -> list[list[tuple[str, bool]]]:
    """Cascading stages from the output down: each stage lists the ``(module name, recurse)`` it re-draws, on top
    of every earlier stage. ``groups``: at most ``max_stages`` stages of consecutive groups, the last one reaching
    the input; ``layers``: one layer with parameters per stage (``layers`` of them, from the output)."""
    if mode == "layers":
        return [[(name, False)] for name in _layers_top_down(model)[:layers]]
    groups = layer_groups(model)[::-1]
    n = min(max_stages, len(groups))
    cuts = [0, *(math.ceil(len(groups) * (i + 1) / n) for i in range(n))]
    # "" is the model's own parameters only (not recursive); a named group is its whole module
    return [[(name, name != "") for name in groups[lo:hi]] for lo, hi in zip(cuts, cuts[1:])]


@torch.no_grad()
def _redraw(module: nn.Module, g: torch.Generator, recurse: bool = False) -> None:
    for p in module.parameters(recurse=recurse):
        std = float(p.std()) if p.numel() > 1 else 0.0
        p.copy_(torch.randn(p.shape, generator=g).to(p) * (std if std > 0 else 0.1))


def _stage_label(stage: list[tuple[str, bool]]) -> str:
    names = [name or "(model parameters)" for name, _ in stage]
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def _stored_maps(diag: AttributionDiagnostic, ctx: AutopsyContext, out: DiagnosticOutput, k: int
                 ) -> dict[str, np.ndarray] | None:
    """The checked diagnostic's own per-sample arrays for the first ``k`` samples, when it finished in this run."""
    rec = (ctx.extras.get("records") or {}).get(diag.name) or {}
    root = getattr(getattr(out, "writer", None), "root", None)
    if rec.get("status") != "ok" or root is None:
        return None
    folder = root / "arrays" / diag.name
    maps = {}
    for key in ("attributions", "convergence_delta", "gap"):
        path = folder / f"{key}.npy"
        if path.is_file():
            arr = np.load(path, mmap_mode="r")
            if arr.shape[0] < k:
                return None
            maps[key] = np.array(arr[:k])
    return maps if "attributions" in maps else None


def _for_randomized(diag: AttributionDiagnostic, max_steps: int) -> AttributionDiagnostic:
    """The method as run on randomized models: adaptive IG capped at ``max_steps`` (its completeness on a random
    model is not checked; only its map's ranking is compared)."""
    o = diag.options
    if dataclasses.is_dataclass(o) and getattr(o, "n_steps", None) == "auto" and hasattr(o, "max_steps"):
        cheap = copy.copy(diag)
        cheap.options = dataclasses.replace(o, max_steps=min(o.max_steps, max_steps))
        return cheap
    return diag


@register_diagnostic("sanity_checks")
class SanityChecks(Diagnostic):
    """Checks every attribution method of the run; put it after them in the diagnostics list."""

    Options = SanityChecksOptions

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        o = self.options
        methods = [d for d in ctx.extras.get("diagnostics", []) if isinstance(d, AttributionDiagnostic)]
        if not methods:
            raise DiagnosticSkipped("no attribution diagnostic in this run to check")
        k = min(o.samples, ctx.n)
        index = None if ctx.index is None else ctx.index[:k]
        base = _subset(ctx, k, ctx.model, index)
        originals, results = {}, {}
        reused = []
        for d in methods:
            try:
                stored = _stored_maps(d, ctx, out, k)
                originals[d.name] = stored if stored is not None else _maps(d, base)
                if stored is not None:
                    reused.append(d.name)
            except Exception as err:  # noqa: BLE001 - reported per method
                results[d.name] = {"error": f"{type(err).__name__}: {err}"}
                out.flag(f"sanity check could not run {d.name}: {err}")
        stages = randomization_stages(ctx.model, o.mode, o.max_stages, o.layers)
        layers = [_stage_label(stage) for stage in stages]
        work = copy.deepcopy(ctx.model)
        modules = dict(work.named_modules())
        g = torch.Generator().manual_seed(ctx.seed)
        curves: dict[str, list[float]] = {n: [] for n in originals}
        for stage in stages:
            ctx.check_deadline()
            for name, recurse in stage:
                _redraw(modules[name], g, recurse)
            randomized = _subset(ctx, k, work, index)
            for d in methods:
                if d.name in originals:
                    maps = _maps(_for_randomized(d, o.randomized_max_steps), randomized)["attributions"]
                    curves[d.name].append(spearman(originals[d.name]["attributions"], maps))
        for d in methods:
            if d.name not in originals:
                continue
            maps = originals[d.name]
            curve = curves[d.name]
            final = curve[-1] if curve else None
            passed = final is not None and final < o.max_correlation
            rec: dict[str, Any] = {"randomized_layers": layers, "spearman": curve, "final_spearman": final,
                                   "model_randomization": "pass" if passed else "fail",
                                   "originals": "read from its arrays" if d.name in reused else "recomputed"}
            zero = float((maps["attributions"] == 0).mean())
            rec["zero_fraction"] = zero
            if not passed:
                why = (f"; {zero:.0%} of the map values are exactly 0 (input equal to the baseline), so the input's "
                       "structure sets much of the ranking" if zero > 0.2 else "")
                out.flag(f"sanity check failed: {d.name} maps barely change when the model's weights are randomized "
                         f"(Spearman {final if final is not None else float('nan'):.2f} >= {o.max_correlation}){why}")
            stats = MapStats()
            stats.update(maps["attributions"])
            for reason in stats.reasons():
                out.flag(f"sanity check: {d.name}: {reason}")
            rec["degenerate"] = bool(stats.reasons())
            if "convergence_delta" in maps and "gap" in maps:
                rel = np.abs(maps["convergence_delta"]) / np.maximum(np.abs(maps["gap"]), 1e-12)
                rec["completeness_median_relative_error"] = float(np.median(rel))
                rec["completeness"] = "pass" if np.median(rel) <= o.completeness_tolerance else "fail"
                if rec["completeness"] == "fail":
                    out.flag(f"sanity check failed: {d.name} attributions do not sum to f(x) - f(baseline) "
                             f"(median relative error {np.median(rel):.2g})")
            if ctx.target.kind == "classification" and not d.target_dependent:
                rec["target_randomization"] = "not applicable (the method does not depend on the target)"
            elif ctx.target.kind == "classification" and index is not None and ctx.outputs.ndim == 2:
                n_classes = ctx.outputs.shape[1]
                other = (index + torch.randint(1, n_classes, index.shape, generator=g)) % n_classes
                shuffled = _maps(d, _subset(ctx, k, ctx.model, other))["attributions"]
                rho = spearman(maps["attributions"], shuffled)
                rec["target_randomization_spearman"] = rho
                rec["target_randomization"] = "pass" if rho < o.max_correlation else "fail"
                if rec["target_randomization"] == "fail":
                    out.flag(f"sanity check failed: {d.name} maps of another class look the same (Spearman {rho:.2f})")
            results[d.name] = rec
        out.metric("methods", results)
        out.metric("samples", k)
        out.metric("mode", o.mode)
        out.metric("stages", [[name or "(model parameters)" for name, _ in stage] for stage in stages])
        if curves:
            fig, ax = new_figure(7, 4)
            for name, curve in curves.items():
                ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
            ax.axhline(o.max_correlation, color="k", ls="--", lw=1)
            ax.set_xticks(range(1, len(layers) + 1), layers, rotation=60, fontsize=7)
            ax.set_xlabel(f"{o.mode} randomized (cumulative stages, from the output)")
            ax.set_ylabel("Spearman vs original maps")
            ax.set_title("cascading model-parameter randomization")
            ax.legend(fontsize=7)
            out.figure(fig, "randomization")
