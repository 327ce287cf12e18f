"""Collect the sample set the autopsy studies: inputs, labels, per-sample metadata and their positions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cerebro.errors import CerebroConfigError

__all__ = ["SampleSet", "collect_samples", "BatchSpec"]

_INPUT_KEYS = ("x", "input", "inputs", "eeg", "signal", "data", "image", "images", "X")
_TARGET_KEYS = ("y", "target", "targets", "label", "labels", "Y")


@dataclass(frozen=True)
class BatchSpec:
    """Where the input and the label sit in a batch: tuple positions or dict keys (``None``: auto)."""

    input_key: int | str | None = None
    target_key: int | str | None = None

    def split(self, batch: Any) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Return ``(x, y, extra_fields)`` for one batch."""
        if isinstance(batch, Tensor):
            return batch, None, {}
        if isinstance(batch, Mapping):
            keys = list(batch)
            ik = self.input_key if self.input_key is not None else next((k for k in _INPUT_KEYS if k in batch), None)
            if ik not in batch:
                raise CerebroConfigError(f"cannot find the input in a dict batch with keys {keys}; set input_key to one of them")
            tk = self.target_key if self.target_key is not None else next((k for k in _TARGET_KEYS if k in batch), None)
            if tk is not None and tk not in batch:
                raise CerebroConfigError(f"target_key {tk!r} is not in the batch keys {keys}")
            extra = {str(k): v for k, v in batch.items() if k not in (ik, tk)}
            return batch[ik], (batch[tk] if tk is not None else None), extra
        if isinstance(batch, Sequence) and not isinstance(batch, str):
            n = len(batch)
            ik = 0 if self.input_key is None else self.input_key
            tk = (1 if n > 1 else None) if self.target_key is None else self.target_key
            for name, k in (("input_key", ik), ("target_key", tk)):
                if k is not None and (not isinstance(k, int) or not -n <= k < n):
                    raise CerebroConfigError(f"{name}={k!r} does not index a batch of {n} elements (tuple batches take int positions)")
            used = {ik % n} | ({tk % n} if tk is not None else set())
            extra = {f"field_{i}": v for i, v in enumerate(batch) if i not in used}
            return batch[ik], (batch[tk] if tk is not None else None), extra
        raise CerebroConfigError(f"cannot read a batch of type {type(batch).__name__}: use a tensor, a tuple (x, y, ...) or a dict")


@dataclass
class SampleSet:
    """The samples under study, on the CPU. ``indices`` are positions in the loader's sample stream."""

    x: Tensor
    y: Tensor | None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = "dataloader"
    available: int | None = None

    @property
    def n(self) -> int:
        return 0 if self.x is None else int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def _per_sample(value: Any, b: int, prefix: str, out: dict[str, list[Any]]) -> None:
    """Flatten per-sample metadata (1-D tensors, arrays, lists of length ``b``, dicts of those)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _per_sample(v, b, f"{prefix}.{k}", out)
    elif isinstance(value, (Tensor, np.ndarray)):
        if value.ndim == 1 and value.shape[0] == b:
            out[prefix] = value.tolist()
    elif isinstance(value, (list, tuple)) and len(value) == b and all(
        isinstance(v, (str, int, float, bool, np.generic)) or (isinstance(v, Tensor) and v.numel() == 1) for v in value
    ):
        out[prefix] = [v.item() if isinstance(v, (Tensor, np.generic)) else v for v in value]


def _rows(loader: Iterable[Any], spec: BatchSpec) -> Iterable[tuple[Tensor, Tensor | None, dict[str, list[Any]]]]:
    for batch in loader:
        x, y, extra = spec.split(batch)
        if not isinstance(x, Tensor):
            raise CerebroConfigError(f"the batch input must be a tensor, got {type(x).__name__}")
        b = int(x.shape[0]) if x.ndim else 0
        if y is not None and not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        meta: dict[str, list[Any]] = {}
        for k, v in extra.items():
            _per_sample(v, b, k, meta)
        yield x.detach(), (y.detach() if y is not None else None), meta


def collect_samples(
    loader: Iterable[Any],
    max_samples: int,
    spec: BatchSpec | None = None,
    sampling: str = "first",
    seed: int = 0,
    source: str = "dataloader",
) -> SampleSet:
    """Take the first ``max_samples`` samples in order, or a seeded uniform draw (reservoir) over the whole loader.

    Tensors are cloned to plain CPU tensors, so batches produced under ``torch.inference_mode`` can enter autograd.
    """
    spec = spec or BatchSpec()
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    metas: list[dict[str, list[Any]]] = []
    seen = 0
    rng = np.random.default_rng(seed)
    # Reservoir state for sampling="random": chosen (stream position -> (batch id, row)).
    chosen: list[tuple[int, int, int]] = []
    has_y = True
    for bi, (x, y, meta) in enumerate(_rows(loader, spec)):
        b = int(x.shape[0])
        has_y = has_y and y is not None
        xs.append(x.cpu().clone())
        ys.append(y.cpu().clone() if y is not None else None)  # type: ignore[arg-type]
        metas.append(meta)
        for r in range(b):
            pos = seen + r
            if len(chosen) < max_samples:
                chosen.append((pos, bi, r))
            elif sampling == "random":
                j = int(rng.integers(0, pos + 1))
                if j < max_samples:
                    chosen[j] = (pos, bi, r)
        seen += b
        if sampling == "first" and seen >= max_samples:
            break
        if sampling == "random":  # drop batches no longer referenced, keeping memory at O(max_samples)
            live = {c[1] for c in chosen}
            for i in range(len(xs)):
                if i not in live:
                    xs[i] = ys[i] = None  # type: ignore[call-overload]
                    metas[i] = {}
    if not chosen:
        return SampleSet(x=torch.zeros(0), y=None, source=source, available=seen)
    chosen.sort()
    x = torch.stack([xs[bi][r] for _, bi, r in chosen])
    y = torch.stack([ys[bi][r] for _, bi, r in chosen]) if has_y else None
    keys = set.intersection(*(set(metas[bi]) for _, bi, _ in chosen))
    metadata = {k: [metas[bi][k][r] for _, bi, r in chosen] for k in sorted(keys)}
    indices = np.array([p for p, _, _ in chosen], dtype=np.int64)
    return SampleSet(x=x, y=y, metadata=metadata, indices=indices, source=source, available=seen)
