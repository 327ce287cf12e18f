"""``faithfulness``: which map to believe. Deletion/insertion curves of every saved map against random order.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018
(arXiv:1806.07421): deleting the units a faithful map ranks first makes the score fall faster, and inserting them
first makes it rise faster, than in a random order of the same units with the same replacement. Captum's
``infidelity`` (Yeh et al. 2019) and ``sensitivity_max`` run on a few samples. Combined with the ``sanity_checks``
verdicts (Adebayo et al. 2018) into one verdict per method (trust | care | do_not_read) and one recommended method.

Reads the maps the attribution diagnostics of the run saved (``arrays/<method>/attributions.npy``); nothing is
re-attributed except for ``sensitivity_max`` on ``metric_samples`` samples. Forward passes only, no backward: every
pass of the curves goes through :func:`curve_forward`, in the precision of ``precision``
(:mod:`cerebro.engine.curve_precision`: reduced only where it is faster and moves no AUC by more than
``precision_tolerance``). Levels (dense at the start of the curve by default) and areas:
:mod:`cerebro.engine.curve_levels`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from torch import Tensor

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.baselines import make_baseline
from cerebro.engine.budget import points_per_pass
from cerebro.engine.captum_metrics import noise_infidelity, rerun_explainer, uniform_sensitivity
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.engine.curve_levels import SPACINGS, curve_scores, unit_counts
from cerebro.engine.curve_precision import block_curves, planned_curves
from cerebro.engine.perturbation import UNIT_KINDS, Units, blur, make_units, maps_on_input, random_orders, unit_order
from cerebro.engine.precision import PRECISIONS, PrecisionPlan, record_precision
from cerebro.engine.rng import seeded
from cerebro.engine.store import RowTensor
from cerebro.errors import CerebroConfigError, DiagnosticSkipped, choice_error
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput

__all__ = ["Faithfulness", "FaithfulnessOptions", "curve_forward", "verdict"]

_REPLACEMENTS = ("baseline", "blur", "mean")
_SCORES = ("auto", "target", "probability")
#: Steps chosen by ``steps: auto`` stay within these bounds.
AUTO_STEPS = (5, 32)


@dataclass
class FaithfulnessOptions:
    #: Attribution diagnostics of the run to evaluate; null = every one.
    methods: Optional[list[str]] = None
    #: Units perturbed together: auto | patches | channels | time | blocks | features | tokens.
    units: str = field(default="auto", metadata={"choices": UNIT_KINDS})
    #: Image patch side in pixels; null = smallest side giving at most 256 patches.
    patch: Optional[int] = field(default=None, metadata={"min": 1})
    #: Samples per time window (time, blocks); null = T / 20.
    window: Optional[int] = field(default=None, metadata={"min": 1})
    #: Channels per block (blocks).
    block_channels: int = field(default=1, metadata={"min": 1})
    #: Levels of each curve (unperturbed ... fully replaced), or auto: as many as keep the cost within the IG pass.
    steps: Any = "auto"
    #: Where the levels lie: quadratic (fraction (k/(steps-1))^2: dense at the start) | geometric | uniform.
    spacing: str = field(default="quadratic", metadata={"choices": SPACINGS})
    #: What replaces a unit: baseline (integrated_gradients' baseline, else zeros) | blur | mean (sample-set mean).
    replacement: str = field(default="baseline", metadata={"choices": _REPLACEMENTS})
    #: Gaussian sigma of blur in samples/pixels; null = a tenth of the longest spatial or time axis.
    blur_sigma: Optional[float] = field(default=None, metadata={"min": 0.0})
    #: Token id that replaces tokens (token-id inputs); null = the autopsy's tokens.baseline (pad | mask | an id).
    token_baseline: Optional[int] = field(default=None, metadata={"min": 0})
    #: Random unit orders averaged into the chance curve.
    random_orders: int = field(default=3, metadata={"min": 1})
    #: Curve of: auto (class probability for classification, else the target's scalar) | target | probability.
    score: str = field(default="auto", metadata={"choices": _SCORES})
    #: Samples for Captum's infidelity and sensitivity_max (0 = off).
    metric_samples: int = field(default=4, metadata={"min": 0})
    #: Noise draws per sample of infidelity (forward passes only).
    n_perturb_samples: int = field(default=8, metadata={"min": 1})
    #: Samples of sensitivity_max (at most metric_samples; each of their noise draws re-runs the method).
    sensitivity_samples: int = field(default=2, metadata={"min": 1})
    #: Noise draws per sample of sensitivity_max.
    sensitivity_perturbations: int = field(default=3, metadata={"min": 1})
    #: Their noise scale, as a fraction of the inputs' standard deviation.
    noise: float = field(default=0.1, metadata={"min": 0.0})
    #: Re-run each method for sensitivity_max (sensitivity_samples x sensitivity_perturbations maps per method).
    sensitivity: bool = True
    #: Verdict trust needs a score at least this (0 = random order).
    trust_score: float = field(default=0.15, metadata={"min": 0.0})
    #: Below this (or within two standard errors of 0) a map is read as no better than random order.
    min_score: float = field(default=0.05, metadata={"min": 0.0})
    #: auto | fp32 | bf16 | fp16 inside the model for the curves' forward passes. auto tries bf16/fp16 only where
    #: the hardware has fast units (CUDA, CPUs with AMX): the first block runs in both precisions (its fp32 curves are
    #: kept) and the rest stays reduced only if it is faster and every AUC is within precision_tolerance of fp32's.
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    #: Most difference of any AUC (on the report's scale: fraction of the unperturbed score) from fp32's.
    precision_tolerance: float = field(default=0.01, metadata={"min": 0.0})


def curve_forward(ctx: AutopsyContext, kind: str, x: Tensor, index: Tensor | None) -> Tensor:
    """The one place the curves run the model (no gradients; ``perturbation_curves`` stacks the points): the
    probability of the explained class (``kind`` probability) or the target's scalar, one value per sample ``(B,)``."""
    if kind == "probability":
        return ctx.model(x).float().softmax(1).gather(1, index.reshape(-1, 1)).squeeze(1)
    return ctx.forward(x, *(() if index is None else (index,)))


def verdict(score: float | None, stderr: float | None, sanity: dict[str, Any] | None, trust_score: float,
            min_score: float) -> tuple[str, str]:
    """``(trust | care | do_not_read, why)`` from the faithfulness score and the method's sanity-check record."""
    sanity = sanity or {}
    if sanity.get("model_randomization") == "fail":
        return "do_not_read", ("fails model randomization (sanity_checks): the map barely depends on the weights, "
                               "so it explains the input, not the model")
    if sanity.get("degenerate"):
        return "do_not_read", "degenerate map (sanity_checks): constant, zero or non-finite values"
    if score is None:
        return "care", "the score does not move when units are replaced: faithfulness cannot be measured here"
    if score < min_score or score - 2 * (stderr or 0.0) <= 0:
        return "do_not_read", f"no more faithful than random order (score {score:.3f} +- {2 * (stderr or 0):.3f})"
    cautions = [f"{k.replace('_', ' ')} fails (sanity_checks)" for k in ("target_randomization", "completeness")
                if sanity.get(k) == "fail"]
    if score < trust_score:
        cautions.insert(0, f"only slightly more faithful than random order (score {score:.3f} < {trust_score})")
    if cautions:
        return "care", "; ".join(cautions)
    checked = "passes the sanity checks" if sanity else "sanity_checks not run"
    return "trust", f"clearly more faithful than random order (score {score:.3f}); {checked}"


@register_diagnostic("faithfulness")
class Faithfulness(Diagnostic):
    """Deletion/insertion AUC of every attribution map of the run vs random order, a verdict per method and a
    recommended method. Runs after the attribution diagnostics and ``sanity_checks`` wherever it is listed."""

    Options = FaithfulnessOptions
    after_attributions: ClassVar[bool] = True
    runs_after: ClassVar[tuple[str, ...]] = ("sanity_checks",)

    def validate(self) -> None:
        s = self.options.steps
        if s != "auto" and (isinstance(s, bool) or not isinstance(s, int) or s < 3):
            raise CerebroConfigError(f"`faithfulness.steps` must be an int >= 3 or 'auto', got {s!r}")
        if self.options.methods is not None:
            from cerebro.registry import available_diagnostics, get_diagnostic

            names = available_diagnostics()
            attribution = [n for n in names if issubclass(get_diagnostic(n), AttributionDiagnostic)]
            for name in self.options.methods:
                if name in attribution:
                    continue
                if isinstance(name, str) and name in names:
                    raise CerebroConfigError(f"`faithfulness.methods` lists {name!r}, which makes no attribution maps")
                raise choice_error("faithfulness.methods", name, attribution)  # a typo, or no name (a nested list)

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _methods(self, ctx: AutopsyContext, root: Path) -> tuple[dict[str, RowTensor], dict[str, str]]:
        records = ctx.extras.get("records", {})
        chosen = [d for d in ctx.extras.get("diagnostics", []) if isinstance(d, AttributionDiagnostic)
                  and (self.options.methods is None or d.name in self.options.methods)]
        maps, skipped = {}, {}
        for d in chosen:
            rec = records.get(d.name, {})
            path, where = root / "arrays" / d.name / "attributions.npy", root / "arrays" / d.name / "indices.npy"
            if rec.get("status") != "ok":
                skipped[d.name] = f"{d.name} {rec.get('status', 'did not run')}: {rec.get('reason')}"
            elif not path.is_file() or not where.is_file():
                skipped[d.name] = f"{d.name} saved no attributions.npy/indices.npy"
            elif (root / "arrays" / d.name / "frequencies.npy").is_file():
                skipped[d.name] = f"{d.name} maps frequencies: deleting them in the input's own units does not apply"
            elif not np.array_equal(np.load(where), ctx.samples.indices):
                skipped[d.name] = f"{d.name}'s maps are of other samples (indices.npy differs)"
            else:
                rows = RowTensor(path)
                if maps_on_input(rows[0:1].float(), ctx.samples.input_shape) is None:
                    skipped[d.name] = (f"{d.name}'s maps {tuple(rows.shape[1:])} cannot be placed on the input "
                                       f"{tuple(ctx.samples.input_shape)}")
                else:
                    maps[d.name] = rows
        for name in self.options.methods or []:
            if name not in maps and name not in skipped:
                skipped[name] = f"{name} is not in this run's diagnostics"
        return maps, skipped

    def _steps(self, ctx: AutopsyContext, n_methods: int) -> tuple[int, str]:
        o = self.options
        if o.steps != "auto":
            return int(o.steps), "set by faithfulness.steps"
        ig = ctx.extras.get("records", {}).get("integrated_gradients", {}).get("metrics", {})
        # IG's forward+backward points per sample (every level of an adaptive run), each counted as 2 forwards (a
        # backward costs about 2 forwards, so this leaves a margin); the curves cost
        # 2 * (methods + random orders) * (steps - 2) + 2 forwards per sample.
        points = ig.get("evaluations") / ctx.n if ig.get("evaluations") else ig.get("steps_mean")
        if not points:
            return 16, "auto without integrated_gradients in the run: 16"
        per_level = 2 * (n_methods + o.random_orders)
        steps = 2 + int((2 * float(points) - 2) // per_level)
        lo, hi = AUTO_STEPS
        return min(hi, max(lo, steps)), (f"auto: within the IG pass ({float(points):.3g} forward+backward points per "
                                         f"sample), {per_level} curves, bounds {lo}..{hi}")

    def _reference(self, ctx: AutopsyContext, integer: bool) -> tuple[Tensor | None, str]:
        o = self.options
        if integer:
            if o.replacement != "baseline":
                raise CerebroConfigError(f"faithfulness.replacement {o.replacement!r} needs real-valued inputs; "
                                         "token ids are replaced by token_baseline (replacement: baseline)")
            tokens = getattr(ctx, "tokens", None)
            if o.token_baseline is not None:
                token, why = o.token_baseline, "faithfulness.token_baseline"
            elif tokens is not None:
                token, why = tokens.baseline_id(self.name), f"tokens.baseline {tokens.options.baseline}"
            else:
                raise CerebroConfigError("faithfulness: integer inputs without a token baseline; set "
                                         "faithfulness.token_baseline (or the autopsy's tokens.baseline) to a token id")
            return torch.full((1, *ctx.samples.input_shape), token, dtype=ctx.samples.x.dtype), \
                f"token id {token} ({why})"
        if o.replacement == "blur":
            return None, "blurred input"
        if o.replacement == "mean":
            return make_baseline("mean", ctx.samples.x, owner=self.name), "mean input of the sample set"
        ig = next((d for d in ctx.extras.get("diagnostics", []) if d.name == "integrated_gradients"), None)
        spec = ig.options.baseline if ig is not None else "zeros"
        return make_baseline(spec, ctx.samples.x, owner=self.name), (
            f"{spec} (integrated_gradients' baseline)" if ig is not None else "zeros")

    def _scorer(self, ctx: AutopsyContext) -> tuple[Any, str]:
        kind = self.options.score
        if kind == "auto":
            kind = "probability" if ctx.target.kind == "classification" else "target"
        if kind == "probability" and (ctx.outputs.ndim != 2 or ctx.index is None):
            raise CerebroConfigError("faithfulness.score probability needs (B, K) logits and a class per sample; "
                                     "use score: target")
        return (lambda x, idx: curve_forward(ctx, kind, x, idx)), (
            "probability of the explained class" if kind == "probability" else "the target's scalar")

    # -- run ------------------------------------------------------------------------------------------------------
    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        o = self.options
        t0 = time.perf_counter()
        maps, skipped = self._methods(ctx, out.writer.root)
        if skipped:
            out.metric("not_evaluated", skipped)
        if not maps:
            raise DiagnosticSkipped("no attribution maps of this run to evaluate" + (f": {skipped}" if skipped else ""))
        shape = tuple(ctx.samples.input_shape)
        integer = not ctx.samples.x.dtype.is_floating_point
        units = make_units(shape, o.units, o.patch, o.window, o.block_channels, integer)
        steps, rule = self._steps(ctx, len(maps))
        counts = unit_counts(units.n, steps, o.spacing)
        steps = len(counts)  # fewer levels than asked when there are fewer units
        reference, ref_name = self._reference(ctx, integer)
        score, score_name = self._scorer(ctx)
        sigma = o.blur_sigma or max(1.0, max(shape[1:] or shape) / 10)
        axes = tuple(range(2, len(shape) + 1)) if len(shape) >= 2 else (1,)
        limit = points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        policy = ChunkPolicy(limit, ("faithfulness", type(ctx.model).__qualname__, shape, str(ctx.device)), ctx.device)
        names = list(maps)
        n = ctx.n
        dele = {m: np.zeros((n, steps)) for m in [*names, "random"]}
        ins = {m: np.zeros((n, steps)) for m in [*names, "random"]}
        rand_area = {"deletion": np.zeros(n), "insertion": np.zeros(n)}
        ties = torch.Generator().manual_seed(ctx.seed)
        plan = PrecisionPlan(o.precision, ctx.device)
        for sl in ctx.chunks():
            x = ctx.x(sl)
            ref = (blur(x, sigma, axes) if reference is None else reference.to(ctx.device).expand_as(x))
            index = None if ctx.index is None else ctx.index[sl].to(ctx.device)
            orders = []
            for m in names:
                values = maps_on_input(maps[m][sl].float(), shape)
                orders.append(unit_order(values, units, ties))
            orders += [random_orders(ctx.samples.indices[sl], units.n, ctx.seed, r) for r in range(o.random_orders)]
            d, i = planned_curves(plan, o.precision_tolerance, names, score, x, ref, index, orders, units, counts,
                                  policy, ctx.check_deadline)
            block_d, block_i, block_area = block_curves(names, d, i, counts, units)
            for m in dele:
                dele[m][sl], ins[m][sl] = block_d[m], block_i[m]
            for kind in rand_area:
                rand_area[kind][sl] = block_area[kind]
        curve_seconds = time.perf_counter() - t0
        results = self._score(ctx, names, dele, ins, rand_area, counts, units, out)
        t1 = time.perf_counter()
        if o.metric_samples and not integer:
            self._captum_metrics(ctx, maps, results, shape)
        metric_seconds = time.perf_counter() - t1
        self._verdicts(ctx, results, out)
        for m in names:
            out.array(f"{m}_deletion", dele[m].astype(np.float32))
            out.array(f"{m}_insertion", ins[m].astype(np.float32))
        out.array("random_deletion", dele["random"].astype(np.float32))
        out.array("random_insertion", ins["random"].astype(np.float32))
        out.array("fraction_perturbed", np.array(counts, dtype=np.float64) / units.n)
        out.array("indices", ctx.samples.indices)
        self._figure(out, names, dele, ins, counts, units, results)
        ig = ctx.extras.get("records", {}).get("integrated_gradients", {})
        total = time.perf_counter() - t0
        out.metric("units", units.describe())
        out.metric("unit_kind", units.kind)
        out.metric("n_units", units.n)
        out.metric("steps", steps)
        out.metric("steps_rule", rule)
        out.metric("spacing", o.spacing)
        out.metric("random_orders", o.random_orders)
        out.metric("replacement", ref_name)
        out.metric("curve_score", score_name)
        out.metric("forward_points", int(n * (2 * (len(names) + o.random_orders) * sum(
            1 for c in counts if 0 < c < units.n) + 2)))
        out.metric("seconds_curves", round(curve_seconds, 4))
        out.metric("seconds_captum_metrics", round(metric_seconds, 4))
        if ig.get("status") == "ok" and ig.get("seconds"):
            out.metric("integrated_gradients_seconds", ig["seconds"])
            out.metric("cost_ratio_vs_ig", round(curve_seconds / ig["seconds"], 4))
            out.metric("cost_ratio_vs_ig_total", round(total / ig["seconds"], 4))
        for k, v in policy.describe().items():
            out.metric(k, v)
        record_precision(out, plan)

    def _score(self, ctx: AutopsyContext, names: list[str], dele: dict[str, np.ndarray], ins: dict[str, np.ndarray],
               rand_area: dict[str, np.ndarray], counts: list[int], units: Units, out: DiagnosticOutput
               ) -> dict[str, dict[str, Any]]:
        results, meta = curve_scores(names, dele, ins, rand_area, counts, units.n)
        for k, v in meta.items():
            out.metric(k, v)
        return results

    def _captum_metrics(self, ctx: AutopsyContext, maps: dict[str, RowTensor], results: dict[str, dict[str, Any]],
                        shape: tuple[int, ...]) -> None:
        o = self.options
        k = min(o.metric_samples, ctx.n)
        sl = slice(0, k)
        x = ctx.x(sl).float()
        std = float(x.std()) or 1.0
        index = None if ctx.index is None else ctx.index[sl].to(ctx.device)
        batch = max(1, points_per_pass(ctx.model, x[:1], ctx.memory_budget) // max(1, k))
        diagnostics = {d.name: d for d in ctx.extras.get("diagnostics", [])}
        for m, rows in maps.items():
            ctx.check_deadline()
            values = maps_on_input(rows[sl].float(), shape).to(ctx.device)
            try:
                with seeded(ctx.seed):
                    inf = noise_infidelity(ctx.forward, x, values, index, o.noise * std, o.n_perturb_samples, batch)
                results[m]["infidelity"] = float(inf.mean())
            except Exception as err:  # noqa: BLE001 - recorded per method
                results[m]["infidelity_error"] = f"{type(err).__name__}: {err}"
            if not o.sensitivity or m not in diagnostics:
                continue
            try:
                with seeded(ctx.seed):
                    ks = min(k, o.sensitivity_samples)
                    sens = uniform_sensitivity(rerun_explainer(ctx, diagnostics[m], shape), x[:ks],
                                               None if index is None else index[:ks], o.noise * std,
                                               o.sensitivity_perturbations, batch)
                results[m]["sensitivity_max"] = float(sens.mean())
            except Exception as err:  # noqa: BLE001 - recorded per method
                results[m]["sensitivity_error"] = f"{type(err).__name__}: {err}"
        for m in results:
            results[m]["metric_samples"] = k
            if o.sensitivity:
                results[m]["sensitivity_samples"] = min(k, o.sensitivity_samples)

    def _verdicts(self, ctx: AutopsyContext, results: dict[str, dict[str, Any]], out: DiagnosticOutput) -> None:
        o = self.options
        sanity_rec = ctx.extras.get("records", {}).get("sanity_checks", {})
        sanity = (sanity_rec.get("metrics") or {}).get("methods", {}) if sanity_rec.get("status") == "ok" else {}
        out.metric("sanity_checks", "used" if sanity else "not run")
        for m, rec in results.items():
            s = sanity.get(m) if isinstance(sanity.get(m), dict) and "error" not in sanity.get(m, {}) else None
            rec["verdict"], rec["verdict_reason"] = verdict(rec["score"], rec["score_stderr"], s, o.trust_score,
                                                            o.min_score)
            rec["model_randomization"] = (s or {}).get("model_randomization", "not run")
            if rec["verdict"] == "do_not_read":
                out.flag(f"faithfulness: do not read {m}: {rec['verdict_reason']}")
        ranked = sorted(results, key=lambda m: -(results[m]["score"] if results[m]["score"] is not None else -math.inf))
        best = next((m for v in ("trust", "care") for m in ranked if results[m]["verdict"] == v), None)
        out.metric("methods", results)
        out.metric("ranking", ranked)
        out.metric("recommended", best)
        if best is None:
            out.flag("faithfulness: no map of this run is more faithful than random order; read none of them")

    def _figure(self, out: DiagnosticOutput, names: list[str], dele: dict[str, np.ndarray],
                ins: dict[str, np.ndarray], counts: list[int], units: Units, results: dict[str, Any]) -> None:
        from matplotlib.figure import Figure

        frac = np.array(counts) / units.n
        full = dele["random"][:, :1]  # drawn on the AUCs' own scale, so the area under each mean curve is its AUC
        scale, unit = (full, "score / unperturbed score") if np.all(full > 0) else (1.0, "mean score")
        fig = Figure(figsize=(11, 4))
        for ax, curves, kind in ((fig.add_subplot(1, 2, 1), dele, "deletion"),
                                 (fig.add_subplot(1, 2, 2), ins, "insertion")):
            for m in names:
                ax.plot(frac, (curves[m] / scale).mean(0), marker=".",
                        label=f"{m} AUC {results[m][kind + '_auc']:.3g} ({results[m]['verdict']})")
            ax.plot(frac, (curves["random"] / scale).mean(0), "k--", marker=".",
                    label=f"random order AUC {results[names[0]]['random_' + kind + '_auc']:.3g}")
            # on the fraction axis itself, linear (dots: the levels measured)
            ax.set_xlabel(f"fraction of {units.kind} {'replaced' if kind == 'deletion' else 'inserted'} "
                          f"({self.options.spacing} levels)")
            ax.set_xlim(0, 1)
            ax.set_ylabel(unit)
            ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} = more faithful)")
            ax.legend(fontsize=7)
        out.figure(fig, "curves")

