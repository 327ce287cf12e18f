"""``training_influence``: which training samples taught the model each answer (TracIn over the run's checkpoints).

Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent". For every studied sample: the
k training samples whose loss gradients agreed most (proponents) and least (opponents) with its own, summed over
checkpoints weighted by their learning rate; for every training sample its self-influence (large for mislabelled,
artefact or atypical samples). The math is in :mod:`cerebro.engine.influence`; the callback keeps the snapshots and
hands the training data over (:mod:`cerebro.engine.influence_data`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.budget import points_per_pass
from cerebro.engine.context import AutopsyContext, find_module_loss
from cerebro.engine.influence import MODES, PerSampleLoss, Snapshot, TracIn, batches, merge_results
from cerebro.engine.influence_data import KEY, TrainingData, checkpoint_paths
from cerebro.errors import CerebroConfigError, choice_error
from cerebro.registry import register_diagnostic
from cerebro.report.writer import DiagnosticOutput
from cerebro.samples import _per_sample

__all__ = ["TrainingInfluence"]

TOP_SELF = 20  # training samples listed in top_self_influence
SHOWN = 3  # worst cases drawn, and proponents/opponents drawn beside each


@dataclass
class TrainingInfluenceOptions:
    #: last_layer (final linear layer, fast) | projected (all parameters, random projection) | exact (all, full).
    mode: str = field(default="last_layer", metadata={"choices": MODES})
    #: Proponents and opponents kept per studied sample.
    k: int = field(default=10, metadata={"min": 1})
    #: The callback keeps a snapshot every this many epochs.
    snapshots: int = field(default=1, metadata={"min": 1})
    #: null (the callback's snapshots), or checkpoint files: a glob or a list of paths/globs.
    checkpoints: Any = None
    #: Dimension of the random projection (projected mode).
    projection_dim: int = field(default=128, metadata={"min": 1})
    #: auto (the last nn.Linear) or the dotted name of the final linear layer (last_layer mode).
    layer: str = "auto"


def load_snapshots(paths: list[str], model: nn.Module, weights_only: bool = True) -> list[Snapshot]:
    """Snapshots of checkpoint files (full state dicts matched to ``model``) with their learning rates (Lightning's
    first optimizer, Captum's ``learning_rate`` key, else 1.0)."""
    from cerebro.model_source import load_checkpoint, matching_state_dict

    out = []
    for path in paths:
        state = matching_state_dict(model, path, weights_only)
        ckpt = load_checkpoint(path, weights_only)
        try:
            lr = float(ckpt["learning_rate"] if "learning_rate" in ckpt
                       else ckpt["optimizer_states"][0]["param_groups"][0]["lr"])
        except (KeyError, IndexError, TypeError):
            lr = 1.0
        out.append(Snapshot({k: v.detach() for k, v in state.items()}, lr, path))
    return out


@register_diagnostic("training_influence")
class TrainingInfluence(Diagnostic):
    """TracIn proponents/opponents of each studied sample and self-influence of each training sample."""

    Options = TrainingInfluenceOptions
    #: Under DDP every rank runs it on its share of the training batches; rank 0 joins the results and writes.
    shardable: ClassVar[bool] = True
    requires_labels = True

    def validate(self) -> None:
        c = self.options.checkpoints
        if c is not None and not (isinstance(c, str) or (isinstance(c, (list, tuple)) and c
                                                         and all(isinstance(p, str) for p in c))):
            raise CerebroConfigError("`training_influence.checkpoints` can be null (the callback's snapshots), a glob "
                                     f"or a non-empty list of checkpoint paths, got {c!r}")

    # -- model checks (also run in the callback's setup, before training) ----------------------------------------
    def final_layer(self, model: nn.Module) -> str:
        """The final linear layer's name (``layer`` option), checked to exist and to be an ``nn.Linear``."""
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
        name = self.options.layer
        if name == "auto":
            if not linears:
                raise CerebroConfigError(f"`training_influence.layer`: auto found no nn.Linear in "
                                         f"{type(model).__name__}; last_layer mode needs a final linear layer, use "
                                         "mode: projected or exact")
            return linears[-1]
        modules = dict(model.named_modules())
        if name not in modules:
            raise choice_error("training_influence.layer", name, ["auto", *linears])
        if not isinstance(modules[name], nn.Linear):
            raise CerebroConfigError(f"`training_influence.layer`: {name!r} is a {type(modules[name]).__name__}, not "
                                     f"an nn.Linear (linear layers: {linears}); or use mode: projected")
        return name

    def check_model(self, model: nn.Module) -> None:
        if self.options.mode == "last_layer":
            self.final_layer(model)

    def tracked(self, model: nn.Module) -> list[str]:
        """Parameters the callback snapshots: the final layer's (last_layer) or every trainable one."""
        if self.options.mode == "last_layer":
            layer = self.final_layer(model)
            return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] == layer]
        return [n for n, p in model.named_parameters() if p.requires_grad]

    # -- run ------------------------------------------------------------------------------------------------------
    def _loss(self, ctx: AutopsyContext) -> PerSampleLoss:
        found = find_module_loss(ctx.model)
        if found is not None:
            return PerSampleLoss(found[1], f"module.{found[0]}")
        if not ctx.target.supervised:
            raise CerebroConfigError("`training_influence`: the module has no loss_fn/criterion attribute and the "
                                     f"{ctx.target.kind} target has no default loss; give the module a loss_fn")
        return PerSampleLoss(ctx.target.per_sample_loss, f"default_{ctx.target.kind}", per_sample=True)

    def _snapshots(self, ctx: AutopsyContext, data: TrainingData) -> list[Snapshot]:
        if self.options.checkpoints is not None:
            snaps = load_snapshots(checkpoint_paths(self.options.checkpoints), ctx.model, data.weights_only)
            where = "`training_influence.checkpoints` names"
        else:
            snaps, where = list(data.snapshots), "the callback kept (`training_influence.snapshots`: every " \
                f"{self.options.snapshots} epoch(s))"
        if len(snaps) < 2:
            raise CerebroConfigError(
                f"`training_influence.snapshots`/`training_influence.checkpoints`: TracIn traces training over at "
                f"least 2 checkpoints, but {where} {len(snaps)}; train for more epochs, lower "
                "`training_influence.snapshots`, or list more files in `training_influence.checkpoints`")
        return snaps

    def _check_layer(self, ctx: AutopsyContext, layer: str) -> None:
        """last_layer needs the layer whose output IS the model's output (the loss's gradient is taken there)."""
        seen: list[Tensor] = []
        module = ctx.model.get_submodule(layer)
        handle = module.register_forward_hook(lambda _m, _i, o: seen.append(o))
        try:
            with torch.no_grad():
                out = ctx.model(ctx.x(slice(0, min(ctx.n, 2))))
        finally:
            handle.remove()
        last = seen[-1] if seen else None  # the model may reshape it, e.g. (B, 1) -> (B,) with squeeze
        if not (isinstance(last, Tensor) and isinstance(out, Tensor) and last.numel() == out.numel()
                and torch.equal(last.reshape(out.shape), out)):
            raise CerebroConfigError(
                f"`training_influence.layer`: {layer!r} is not the final layer (its output is not the model's "
                "output); name the nn.Linear whose output the model returns, or use mode: projected")

    def _compute(self, ctx: AutopsyContext) -> tuple[Any, ...]:
        """This rank's TracIn over its share of the training batches, and what writing needs."""
        data = ctx.extras.get(KEY)
        if not isinstance(data, TrainingData) or data.loader is None:
            why = getattr(data, "note", None) or "none was handed to the autopsy"
            raise CerebroConfigError(
                f"`training_influence`: no training data reachable ({why}); it runs from the ModelAutopsy callback "
                "(the datamodule's train_dataloader or the loaders given to fit), the cerebro-autopsy script (the "
                "datamodule's train_dataloader) or run_autopsy(train_dataloader=...)")
        opts = self.options
        layer = self.final_layer(ctx.model) if opts.mode == "last_layer" else None
        if layer is not None:
            self._check_layer(ctx, layer)
        snaps = self._snapshots(ctx, data)
        loss = self._loss(ctx)
        assert ctx.samples.y is not None
        y_test = ctx.samples.y
        probe = slice(0, min(ctx.n, 8))
        with torch.no_grad():
            loss.check(ctx.model(ctx.x(probe)), y_test[probe].to(ctx.device))
        tracin = TracIn(ctx.model, snaps, loss, opts.mode, ctx.device, layer, opts.projection_dim, ctx.seed,
                        ctx.memory_budget)
        tracin.chunk = min(tracin.chunk, points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget))
        held = ctx.n * tracin.n_params * len(snaps) * 4
        if opts.mode == "exact" and held > ctx.memory_budget:
            raise CerebroConfigError(
                f"`training_influence.mode`: exact keeps {ctx.n} studied samples x {tracin.n_params} parameters x "
                f"{len(snaps)} checkpoints = {held / 2**20:.0f} MiB of gradients, over the memory budget "
                f"({ctx.memory_budget / 2**20:.0f} MiB); use mode: projected (projection_dim) or last_layer")
        test = tracin.embed_all(ctx.samples.x, y_test, ctx.n)
        labels: list[Any] = []
        meta: dict[str, list[Any]] = {}

        bar = ctx.extras.get("progress")
        try:
            total: Any = len(data.loader.dataset)  # type: ignore[union-attr, arg-type]
        except (AttributeError, TypeError):  # an iterable without a sized dataset
            total = "?"

        def tick(seen: int) -> None:
            ctx.check_deadline()
            if bar is not None:
                bar.running(f"{self.name}: {seen}/{total} training samples")

        stream = batches(data.loader, data.spec.split, labels, meta, _per_sample)
        res = tracin.run(test, stream, opts.k, tick, ctx.comm.rank, ctx.comm.world)
        if res.n_train == 0:
            raise CerebroConfigError("`training_influence`: the training loader yielded 0 samples")
        indices = data.indices if data.indices is not None and len(data.indices) == res.n_train \
            else np.arange(res.n_train, dtype=np.int64)
        with torch.no_grad():
            test_loss = loss(ctx.outputs.to(ctx.device), y_test.to(ctx.device)).double().cpu().numpy()
        return data, tracin, res, indices, labels, meta, test_loss, loss.source

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        comm = ctx.comm
        if comm.world == 1:
            self._write(ctx, out, *self._compute(ctx))
            return
        try:  # every rank reaches the one gather below, whatever fails where (no hang)
            mine, error = self._compute(ctx), None
        except Exception as err:  # noqa: BLE001 - reported by rank 0 with the rank
            mine, error = None, f"{type(err).__name__}: {err}"
        gathered = comm.gather((None if mine is None else mine[2], error))
        if not comm.is_main:
            return
        errors = [f"rank {r}: {e}" for r, (_, e) in enumerate(gathered or []) if e]
        if errors or mine is None:
            raise RuntimeError("; ".join(errors))
        parts = [res for res, _ in gathered or []]
        out.metric("train_samples_per_rank", [int((~np.isnan(r.self_influence)).sum()) for r in parts])
        data, tracin, _, *rest = mine
        self._write(ctx, out, data, tracin, merge_results(parts, self.options.k), *rest)

    # -- outputs --------------------------------------------------------------------------------------------------
    def _write(self, ctx: AutopsyContext, out: DiagnosticOutput, data: TrainingData, tracin: TracIn, res: Any,
               indices: np.ndarray, labels: list[Any], meta: dict[str, list[Any]], test_loss: np.ndarray,
               source: str) -> None:
        si = res.self_influence
        order = np.argsort(-si, kind="stable")
        out.metric("mode", self.options.mode)
        out.metric("checkpoints", len(tracin.lrs))
        out.metric("n_train", res.n_train)
        out.metric("k", int(res.proponents.shape[1]))
        out.metric("top_self_influence", [int(i) for i in order[:TOP_SELF]])
        out.metric("learning_rates", tracin.lrs)
        out.metric("loss_source", source)
        out.metric("layer", tracin.layer)
        out.metric("train_source", data.source)
        if self.options.mode == "projected":
            out.metric("projection_dim", self.options.projection_dim)
        if data.note:
            out.metric("note", data.note)
        out.array("indices", ctx.samples.indices)
        out.array("train_indices", indices)
        out.array("self_influence", si)
        out.array("proponents", res.proponents)
        out.array("proponent_scores", res.proponent_scores)
        out.array("opponents", res.opponents)
        out.array("opponent_scores", res.opponent_scores)
        numeric = bool(labels) and all(isinstance(v, (int, float)) for v in labels)
        if numeric:
            out.array("train_labels", np.asarray(labels))
        median = float(np.median(si))
        out.metric("self_influence_median", median)
        self._self_flag(out, si, order, labels if numeric else [], meta, median)
        worst = np.argsort(-test_loss, kind="stable")[:SHOWN]
        cases = [self._case(ctx, int(i), res, labels if numeric else [], meta, test_loss) for i in worst]
        out.metric("worst_cases", cases)
        if cases:
            out.flag(self._worst_text(cases[0], labels if numeric else [], meta, ctx))
            self._figure(ctx, out, data, cases)

    def _self_flag(self, out: DiagnosticOutput, si: np.ndarray, order: np.ndarray, labels: list[Any],
                   meta: dict[str, list[Any]], median: float) -> None:
        q1, q3 = np.percentile(si, [25, 75])
        outliers = order[si[order] > q3 + 3 * (q3 - q1)]  # far out (Tukey's 3 IQR fence)
        out.metric("self_influence_outliers", int(outliers.size))
        if outliers.size == 0 or median <= 0:
            return
        ratio = float(si[outliers[-1]] / median)
        text = (f"{outliers.size} training windows with the highest self-influence ({ratio:.1f}x the median or more) "
                "are candidates for relabelling or removal")
        groups = _groups(outliers, meta)
        out.metric("self_influence_outlier_groups", groups)
        for fld, counts in groups.items():
            value, n = next(iter(counts.items()))
            if n >= max(2, 0.5 * outliers.size):
                text += f"; {n} of them are from {_group(fld, value)}"
                break
        out.flag(text + f" (training positions {[int(i) for i in outliers[:10]]}{' ...' if outliers.size > 10 else ''})")

    def _case(self, ctx: AutopsyContext, i: int, res: Any, labels: list[Any], meta: dict[str, list[Any]],
              test_loss: np.ndarray) -> dict[str, Any]:
        def entries(pos: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
            return [{"position": int(p), "score": float(s), "label": labels[p] if labels else None,
                     "metadata": {f: meta[f][p] for f in meta}} for p, s in zip(pos, scores)]

        y = ctx.samples.y[i] if ctx.samples.y is not None else None
        return {"row": i, "index": int(ctx.samples.indices[i]), "loss": float(test_loss[i]),
                "label": y.tolist() if isinstance(y, Tensor) else y,
                "metadata": {f: v[i] for f, v in ctx.samples.metadata.items()},
                "proponents": entries(res.proponents[i], res.proponent_scores[i]),
                "opponents": entries(res.opponents[i], res.opponent_scores[i])}

    def _worst_text(self, case: dict[str, Any], labels: list[Any], meta: dict[str, list[Any]],
                    ctx: AutopsyContext) -> str:
        props = case["proponents"]
        pos = [e["position"] for e in props]
        where = f"training windows {pos[:5]}{' ...' if len(pos) > 5 else ''}"
        for fld, counts in _groups(np.asarray(pos), meta).items():
            value, n = next(iter(counts.items()))
            if n >= max(2, 0.5 * len(pos)):
                where = f"{n} of {len(pos)} windows of {_group(fld, value)}"
                break
        own = case["label"]
        text = f"worst sample {case['index']}'s strongest proponents are {where}"
        if labels:
            vals = [labels[p] for p in pos]
            if ctx.target.kind == "classification":
                value, n = Counter(vals).most_common(1)[0]
                text += f" labelled {value} ({n} of {len(vals)}; its own label {own})"
            else:
                text += f" labelled {np.mean(vals):.3g} on average (its own label {_num(own)})"
        return text + f", loss {case['loss']:.3g}"

    def _figure(self, ctx: AutopsyContext, out: DiagnosticOutput, data: TrainingData,
                cases: list[dict[str, Any]]) -> None:
        want = sorted({e["position"] for c in cases for e in [*c["proponents"][:SHOWN], *c["opponents"][:SHOWN]]})
        rows = _rows_at(data, want)
        fig = Figure(figsize=(2.2 * (1 + 2 * SHOWN), 0.4 + 1.9 * len(cases)))
        grid = fig.subplots(len(cases), 1 + 2 * SHOWN, squeeze=False)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=1 - 0.5 / (0.4 + 1.9 * len(cases)), hspace=0.6,
                            wspace=0.12)  # fixed margins: a layout engine costs seconds on 21 panels
        for r, case in enumerate(cases):
            x = ctx.samples.x[case["row"] : case["row"] + 1][0].numpy()
            _panel(grid[r][0], x, f"sample {case['index']}\nlabel {_num(case['label'])}, loss {case['loss']:.3g}", "C3")
            for j, kind in enumerate(("proponents", "opponents")):
                for m in range(SHOWN):
                    ax = grid[r][1 + j * SHOWN + m]
                    entries = case[kind]
                    if m >= len(entries) or entries[m]["position"] not in rows:
                        ax.axis("off")
                        continue
                    e = entries[m]
                    _panel(ax, rows[e["position"]], f"{kind[:-1]} {e['position']}\nlabel {_num(e['label'])}, "
                           f"score {e['score']:.3g}", "C2" if kind == "proponents" else "C0")
        fig.suptitle("worst samples (left), their strongest proponents (green) and opponents (blue)")
        out.figure(fig, "worst_cases")


def _num(v: Any) -> str:
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _group(fld: str, value: str) -> str:
    """``subject 3`` for named fields, ``field_2=3`` for unnamed tuple positions."""
    return f"{fld}={value}" if fld.startswith("field_") else f"{fld} {value}"


def _groups(pos: np.ndarray, meta: dict[str, list[Any]]) -> dict[str, dict[str, int]]:
    """Per metadata field with repeated values: the counts of its values among ``pos``, most common first."""
    out = {}
    for fld, values in meta.items():
        if len(set(map(str, values))) >= len(values):  # a unique id per sample groups nothing
            continue
        counts = Counter(str(values[int(p)]) for p in pos)
        out[fld] = dict(counts.most_common(5))
    return out


def _rows_at(data: TrainingData, positions: list[int]) -> dict[int, np.ndarray]:
    """Inputs of the training samples at ``positions`` (a second read of the loader, stopping at the last one)."""
    rows: dict[int, np.ndarray] = {}
    wanted, seen = set(positions), 0
    if not wanted or data.loader is None:
        return rows
    for batch in data.loader:
        x = data.spec.split(batch)[0]
        for p in wanted & set(range(seen, seen + int(x.shape[0]))):
            rows[p] = x[p - seen].detach().cpu().numpy()
        seen += int(x.shape[0])
        if seen > max(wanted):
            break
    return rows


def _panel(ax: Any, x: np.ndarray, title: str, color: str) -> None:
    """One input drawn small: an image (C, H, W), a (C, T) signal as traces, a (T,) line or flat features as bars."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        img = np.transpose(x, (1, 2, 0))
        img = (img - img.min()) / (np.ptp(img) or 1.0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
    elif x.ndim == 2:
        shown = x[: min(x.shape[0], 12)]
        scale = float(np.abs(shown).max()) or 1.0
        for c in range(shown.shape[0]):
            ax.plot(c - 0.45 * shown[c] / scale, color="0.1", lw=0.5)
        ax.set_ylim(shown.shape[0] - 0.5, -0.5)
    elif x.ndim == 1 and x.size > 32:
        ax.plot(x, color="0.1", lw=0.6)
    else:
        flat = x.reshape(-1)[:64]
        ax.bar(np.arange(flat.size), flat, color="0.3")
    ax.set_xticks([])  # small multiples: ticks would cost most of the drawing time and say little
    ax.set_yticks([])
    ax.set_title(title, fontsize=7, color=color)
