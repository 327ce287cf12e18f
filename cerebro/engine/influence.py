"""TracIn: the influence of each training sample on a test sample, traced over checkpoints of the training run.

Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent" (NeurIPS):
``TracInCP(z, z') = sum_c lr_c * <grad_theta L(theta_c, z), grad_theta L(theta_c, z')>`` over checkpoints ``c``, with
``L`` the per-sample loss and ``lr_c`` the learning rate of checkpoint ``c`` (Captum's ``captum.influence``
conventions: ``TracInCP`` for ``exact``, ``TracInCPFast`` for ``last_layer``, ``TracInCPFastRandProj`` for
``projected``). Self-influence is ``TracInCP(z, z)``.

Modes:
    - ``last_layer``: gradients of the final linear layer's weight only, through the factorisation
      ``grad_W = dL/dout (x) activation``, so ``<grad_W, grad_W'> = (g . g') (a . a')`` (as ``TracInCPFast``: the bias
      is left out). Nothing of size ``N_train x params`` is ever formed.
    - ``projected``: per-sample gradients of every trainable parameter, projected to ``projection_dim`` with a
      seeded Gaussian (Johnson-Lindenstrauss) matrix generated per parameter tensor, so a chunk of training samples
      never holds more than ``chunk x params`` numbers.
    - ``exact``: full per-sample gradients (small models).

Training samples are read once, chunk by chunk; proponents and opponents are kept with a streaming top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from cerebro.errors import CerebroConfigError

__all__ = ["MODES", "Snapshot", "PerSampleLoss", "TracIn", "InfluenceResult", "TopK", "merge_results"]

MODES = ("last_layer", "projected", "exact")


@dataclass
class Snapshot:
    """One checkpoint: tensors that replace the module's own (a subset of its state) and its learning rate."""

    state: dict[str, Tensor]
    lr: float
    label: str = ""


def _like(y: Tensor, o: Tensor) -> Tensor:
    """Float labels ``(B,)`` against outputs ``(B, 1)`` take the output's shape (MSELoss would broadcast them)."""
    if y.shape != o.shape and y.numel() == o.numel() and y.is_floating_point():
        return y.reshape(o.shape)
    return y


class PerSampleLoss:
    """The per-sample loss ``l_i = fn(out[i:i+1], y[i:i+1])``: the loss of a batch of one, which is Captum's
    convention for both ``reduction='mean'`` and ``'sum'`` losses. :meth:`check` verifies on a real batch that the
    batch loss is the sum or the mean of these (a loss that couples samples cannot be traced per sample).

    Args:
        fn: ``fn(out, y) -> scalar`` (the module's own loss), or a per-sample function returning ``(B,)``.
        source: how to name it in messages and ``summary.json``.
        per_sample: ``fn`` already returns one loss per sample.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], source: str, per_sample: bool = False) -> None:
        self.fn, self.source, self.per_sample = fn, source, per_sample
        self.reduction = "none" if per_sample else "?"

    def one(self, out: Tensor, y: Tensor) -> Tensor:
        """Loss of one sample given as a batch of one, as a 0-d tensor."""
        value = self.fn(out, _like(y, out))
        return value.reshape(()) if value.numel() == 1 else value.sum()

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sample losses ``(B,)``."""
        if self.per_sample:
            return self.fn(out, _like(y, out)).reshape(out.shape[0], -1).sum(1)
        try:
            return vmap(lambda o, t: self.one(o.unsqueeze(0), t.unsqueeze(0)))(out, y)
        except Exception:  # noqa: BLE001 - a loss vmap cannot trace: one call per sample (same numbers)
            return torch.stack([self.one(out[i : i + 1], y[i : i + 1]) for i in range(out.shape[0])])

    def check(self, out: Tensor, y: Tensor) -> None:
        """Raise :class:`CerebroConfigError` unless the loss evaluates per sample and adds up to the batch loss."""
        what = f"`training_influence`: the loss `{self.source}`"
        try:
            per = self(out, y)
        except Exception as err:  # noqa: BLE001 - reported with the cause
            raise CerebroConfigError(f"{what} cannot be evaluated on one sample ({type(err).__name__}: {err}); "
                                     "TracIn needs a loss per training sample") from err
        if per.shape != (out.shape[0],) or not torch.isfinite(per).all():
            raise CerebroConfigError(f"{what} gives no finite loss per sample (got shape {tuple(per.shape)})")
        if self.per_sample or out.shape[0] < 2:
            return
        whole = self.fn(out, _like(y, out))
        if not (isinstance(whole, Tensor) and whole.numel() == 1):
            raise CerebroConfigError(f"{what} returned shape {tuple(getattr(whole, 'shape', ()))}, not a scalar")
        w, s = float(whole), float(per.sum())
        for name, value in (("sum", s), ("mean", s / out.shape[0])):
            if abs(w - value) <= 1e-4 * max(abs(value), 1e-6) + 1e-6:  # float32 reductions in another order
                self.reduction = name
                return
        raise CerebroConfigError(
            f"{what} cannot be evaluated per sample: on a batch of {out.shape[0]} it gives {w:.6g}, neither the sum "
            f"({s:.6g}) nor the mean ({s / out.shape[0]:.6g}) of its values on each sample alone (it couples the "
            "samples of a batch); give the module a loss_fn whose batch value is the mean or sum over samples")


@dataclass
class InfluenceResult:
    """What :meth:`TracIn.run` computes; positions index the training samples in the order they were read."""

    self_influence: np.ndarray
    proponents: np.ndarray
    proponent_scores: np.ndarray
    opponents: np.ndarray
    opponent_scores: np.ndarray
    n_train: int
    train_labels: list[Any] = field(default_factory=list)
    train_metadata: dict[str, list[Any]] = field(default_factory=dict)


class TopK:
    """Streaming top-k per row over column chunks: the k largest (``largest=True``) values and their positions."""

    def __init__(self, rows: int, k: int, largest: bool) -> None:
        self.k, self.sign = k, 1.0 if largest else -1.0
        self.values = torch.full((rows, 0), float("-inf"), dtype=torch.float64)
        self.index = torch.zeros((rows, 0), dtype=torch.int64)

    def add(self, scores: Tensor, offset: int) -> None:
        cols = torch.arange(offset, offset + scores.shape[1], dtype=torch.int64).expand(scores.shape[0], -1)
        values = torch.cat([self.values, self.sign * scores.double()], 1)
        index = torch.cat([self.index, cols], 1)
        top = torch.topk(values, min(self.k, values.shape[1]), dim=1)  # ties: lowest position first is not promised
        self.values, self.index = top.values, torch.gather(index, 1, top.indices)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.index.numpy(), (self.sign * self.values).numpy()


class TracIn:
    """TracIn of one model over checkpoints. ``layer`` (a ``nn.Linear`` whose output is the model's output) for
    ``last_layer``; ``chunk`` training samples per gradient pass (memory bound: ``chunk x params`` numbers)."""

    def __init__(self, model: nn.Module, snapshots: Sequence[Snapshot], loss: PerSampleLoss, mode: str,
                 device: torch.device, layer: str | None = None, projection_dim: int = 128, seed: int = 0,
                 memory_budget: int = 1 << 30) -> None:
        self.model, self.loss, self.mode, self.device = model, loss, mode, device
        self.snaps = [{k: v.to(device) for k, v in s.state.items()} for s in snapshots]
        self.lrs = [float(s.lr) for s in snapshots]
        self.layer = layer
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for n, p in model.named_parameters() if n in self.names)
        if mode == "last_layer":
            assert layer is not None
            self.module = model.get_submodule(layer)
            own = {f"{layer}.weight", f"{layer}.bias"}
            self.shared = all(set(s) <= own for s in self.snaps)  # only the head changes: features computed once
            width = self.module.in_features + self.module.out_features
            self.chunk = max(1, min(4096, memory_budget // (16 * width * max(1, len(self.snaps)))))
        else:
            self.chunk = max(1, min(1024, memory_budget // (12 * self.n_params)))
        self.proj_dim, self.seed = projection_dim, seed
        self._proj: dict[int, Tensor] = {}
        self._cache_proj = self.n_params * projection_dim * 4 <= memory_budget // 4

    # -- per-checkpoint embeddings ------------------------------------------------------------------------------
    def _state(self, c: int) -> dict[str, Tensor]:
        return self.snaps[c]

    def _features(self, x: Tensor, state: dict[str, Tensor] | None) -> Tensor:
        """The final layer's input ``(B, in_features)`` under ``state`` (``None``: the module's own weights)."""
        seen: list[Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
        try:
            with torch.no_grad():
                functional_call(self.model, state, (x,)) if state else self.model(x)
        finally:
            handle.remove()
        if not seen or seen[-1].ndim != 2:
            shape = tuple(seen[-1].shape) if seen else None
            raise CerebroConfigError(f"`training_influence.layer`: {self.layer!r} takes inputs of shape {shape}, "
                                     "not (batch, features); last_layer mode needs a final nn.Linear on flat "
                                     "features, use mode: projected")
        return seen[-1]

    def _head(self, state: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        w = state.get(f"{self.layer}.weight", self.module.weight)
        b = state.get(f"{self.layer}.bias", self.module.bias)
        return w.detach(), None if b is None else b.detach()

    def _last_layer(self, x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        shared = self._features(x, None) if self.shared else None
        out = []
        for c, state in enumerate(self.snaps):
            a = shared if shared is not None else self._features(x, state)
            w, b = self._head(state)
            with torch.enable_grad():
                o = torch.nn.functional.linear(a, w, b).detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.loss(o, y).sum(), o)
            out.append((g.detach().reshape(g.shape[0], -1).float(), a.float()))
        return out

    def _grads(self, x: Tensor, y: Tensor, state: dict[str, Tensor]) -> list[Tensor]:
        """Per-sample gradients ``(B, numel)`` of each trainable parameter, under ``state``."""
        own = dict(self.model.named_parameters())
        params = {n: state.get(n, own[n]).detach() for n in self.names}
        rest = {k: v for k, v in state.items() if k not in params}

        def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            return self.loss.one(functional_call(self.model, {**rest, **p}, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        with torch.enable_grad():
            try:
                g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
                return [g[n].reshape(x.shape[0], -1) for n in self.names]
            except Exception:  # noqa: BLE001 - a model vmap cannot trace: one backward per sample (same numbers)
                leaves = {n: v.clone().requires_grad_(True) for n, v in params.items()}
                rows = [torch.autograd.grad(loss_one(leaves, x[i], y[i]), list(leaves.values())) for i in range(len(x))]
                return [torch.stack([r[j].reshape(-1) for r in rows]) for j in range(len(self.names))]

    def _projection(self, j: int, rows: int) -> Tensor:
        if j in self._proj:
            return self._proj[j]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + j)
        r = (torch.randn(rows, self.proj_dim, generator=gen) / self.proj_dim**0.5).to(self.device)
        if self._cache_proj:
            self._proj[j] = r
        return r

    def _flat(self, x: Tensor, y: Tensor) -> list[Tensor]:
        out = []
        for state in self.snaps:
            grads = self._grads(x, y, state)
            if self.mode == "exact":
                out.append(torch.cat(grads, 1).float())
            else:
                out.append(sum(g.float() @ self._projection(j, g.shape[1]) for j, g in enumerate(grads)))
        return out

    def embed(self, x: Tensor, y: Tensor) -> list[Any]:
        """Per checkpoint: ``(g, a)`` (last_layer) or a gradient vector per sample (projected, exact)."""
        x, y = x.to(self.device), y.to(self.device)
        return self._last_layer(x, y) if self.mode == "last_layer" else self._flat(x, y)

    # -- scores -------------------------------------------------------------------------------------------------
    def scores(self, test: list[Any], train: list[Any]) -> Tensor:
        """``(N_test, B)``: ``sum_c lr_c <grad_c(test), grad_c(train)>``."""
        if self.mode == "last_layer" and self.shared:  # the features do not change: (a . a') once, not per checkpoint
            g = sum(lr * (t[0] @ r[0].T) for lr, t, r in zip(self.lrs, test, train))
            return g * (test[0][1] @ train[0][1].T)
        total = None
        for lr, t, r in zip(self.lrs, test, train):
            s = (t[0] @ r[0].T) * (t[1] @ r[1].T) if self.mode == "last_layer" else t @ r.T
            total = lr * s if total is None else total + lr * s
        assert total is not None
        return total

    def self_scores(self, emb: list[Any]) -> Tensor:
        """``(B,)``: ``sum_c lr_c |grad_c|^2``."""
        parts = [lr * ((e[0] ** 2).sum(1) * (e[1] ** 2).sum(1) if self.mode == "last_layer" else (e**2).sum(1))
                 for lr, e in zip(self.lrs, emb)]
        return torch.stack(parts).sum(0)

    def embed_all(self, x: Any, y: Tensor, n: int) -> list[Any]:
        """Embeddings of ``n`` studied samples (``x`` sliceable, e.g. a spilled :class:`RowTensor`), in chunks."""
        parts = [self.embed(x[i : i + self.chunk], y[i : i + self.chunk]) for i in range(0, n, self.chunk)]
        if self.mode == "last_layer":
            return [(torch.cat([p[c][0] for p in parts]), torch.cat([p[c][1] for p in parts]))
                    for c in range(len(self.snaps))]
        return [torch.cat([p[c] for p in parts]) for c in range(len(self.snaps))]

    def run(self, test: list[Any], train: Iterable[tuple[Tensor, Tensor]], k: int,
            tick: Callable[[int], None] | None = None, rank: int = 0, world: int = 1) -> InfluenceResult:
        """Stream the training batches ``(x, y)`` once: self-influence of each and the k strongest proponents and
        opponents of each studied sample (embeddings ``test`` from :meth:`embed_all`). Under DDP every rank reads
        every batch in the same order and computes the batches ``b`` with ``b % world == rank``: its self-influence
        is NaN elsewhere, its top-k covers its batches only (:func:`merge_results` joins the ranks')."""
        rows = test[0][0].shape[0] if self.mode == "last_layer" else test[0].shape[0]
        pro, opp = TopK(rows, k, True), TopK(rows, k, False)
        selfs: list[Tensor] = []
        seen = 0
        for b, (x, y) in enumerate(train):
            n = int(x.shape[0])
            if b % world != rank:  # another rank's batch: only its positions count
                selfs.append(torch.full((n,), float("nan"), dtype=torch.float64))
                seen += n
                continue
            for i in range(0, n, self.chunk):
                emb = self.embed(x[i : i + self.chunk], y[i : i + self.chunk])
                s = self.scores(test, emb).cpu()
                pro.add(s, seen + i)
                opp.add(s, seen + i)
                selfs.append(self.self_scores(emb).double().cpu())
            seen += n
            if tick is not None:
                tick(seen)
        p, ps = pro.result()
        o, os_ = opp.result()
        si = torch.cat(selfs).numpy() if selfs else np.zeros(0)
        return InfluenceResult(si, p, ps, o, os_, seen)


def _merge_top(parts: list[tuple[np.ndarray, np.ndarray]], k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    sign = 1.0 if largest else -1.0
    values = sign * np.concatenate([v for _, v in parts], axis=1)
    index = np.concatenate([i for i, _ in parts], axis=1)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(index, order, 1), sign * np.take_along_axis(values, order, 1)


def merge_results(parts: list[InfluenceResult], k: int) -> InfluenceResult:
    """One result from the ranks' results over disjoint training batches (:meth:`TracIn.run` with ``world > 1``)."""
    si = parts[0].self_influence.copy()
    for part in parts[1:]:
        fill = np.isnan(si)
        si[fill] = part.self_influence[fill]
    p, ps = _merge_top([(r.proponents, r.proponent_scores) for r in parts], k, True)
    o, os_ = _merge_top([(r.opponents, r.opponent_scores) for r in parts], k, False)
    return InfluenceResult(si, p, ps, o, os_, parts[0].n_train)


def batches(loader: Iterable[Any], split: Callable[[Any], tuple[Tensor, Any, dict[str, Any]]],
            labels: list[Any], metadata: dict[str, list[Any]],
            per_sample: Callable[[Any, int, str, dict[str, list[Any]]], None]) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` of each training batch; appends each sample's label and metadata (first batch's fields) as read."""
    first = True
    for batch in loader:
        x, y, extra = split(batch)
        if not isinstance(x, Tensor):
            raise CerebroConfigError(f"`training_influence`: a training batch input is a {type(x).__name__}, "
                                     "not a tensor")
        if y is None:
            raise CerebroConfigError("`training_influence`: the training batches carry no labels, so there is no "
                                     "training loss to trace (set target_key)")
        y = torch.as_tensor(y)
        flat = y.reshape(len(y), -1)[:, 0] if y.ndim > 1 and y[0].numel() == 1 else y
        labels.extend(flat.detach().cpu().tolist())
        meta: dict[str, list[Any]] = {}
        for key, value in extra.items():
            per_sample(value, int(x.shape[0]), key, meta)
        for key in (list(meta) if first else list(metadata)):
            if first:
                metadata[key] = []
            if key in meta:
                metadata[key].extend(meta[key])
            else:
                metadata.pop(key)
        first = False
        yield x.detach(), y.detach()
