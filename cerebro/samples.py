"""Collect the sample set the autopsy studies: inputs, labels, per-sample metadata and their positions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cerebro.engine.store import RowTensor

from cerebro.errors import CerebroConfigError

__all__ = ["SampleSet", "collect_samples", "BatchSpec"]

_INPUT_KEYS = ("x", "input", "inputs", "eeg", "signal", "data", "image", "images", "X")
_TARGET_KEYS = ("y", "target", "targets", "label", "labels", "Y")


@dataclass(frozen=True)
class BatchSpec:
    """Where the input and the label sit in a batch: tuple positions or dict keys (``None``: auto)."""

    input_key: int | str | None = None
    target_key: int | str | None = None
    #: Extra input fields kept whole as tensors (e.g. a similarity target's reference input).
    keep: tuple[int | str, ...] = ()

    def __post_init__(self) -> None:
        for name, key in (("input_key", self.input_key), ("target_key", self.target_key)):
            if key is not None and (isinstance(key, bool) or not isinstance(key, (int, str))):
                raise CerebroConfigError(f"`{name}` must be a tuple position (int), a dict key (str) or None, "
                                         f"got {key!r}")

    def split(self, batch: Any) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Return ``(x, y, extra_fields)`` for one batch."""
        if isinstance(batch, Tensor):
            return batch, None, {}
        if isinstance(batch, Mapping):
            keys = list(batch)
            ik = self.input_key if self.input_key is not None else next((k for k in _INPUT_KEYS if k in batch), None)
            if ik is None:
                raise CerebroConfigError(f"cannot find the input in a dict batch with keys {keys} (none of the usual "
                                         f"names {list(_INPUT_KEYS)}); set input_key to one of them")
            if ik not in batch:
                raise CerebroConfigError(f"input_key {ik!r} is not in the batch keys {keys}")
            tk = self.target_key if self.target_key is not None else next(
                (k for k in _TARGET_KEYS if k in batch and k not in self.keep), None)
            if tk is not None and tk not in batch:
                raise CerebroConfigError(f"target_key {tk!r} is not in the batch keys {keys}")
            extra = {str(k): v for k, v in batch.items() if k not in (ik, tk)}
            return batch[ik], (batch[tk] if tk is not None else None), extra
        if isinstance(batch, Sequence) and not isinstance(batch, str):
            n = len(batch)
            ik = 0 if self.input_key is None else self.input_key
            auto = 1 if n > 1 and 1 not in self.keep else None  # a kept field (a reference input) is no label
            tk = auto if self.target_key is None else self.target_key
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

    x: Tensor | RowTensor
    y: Tensor | None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = "dataloader"
    available: int | None = None

    #: Batch fields kept whole (see :attr:`BatchSpec.keep`), ``(N, ...)`` each, by :meth:`field_name`.
    extras: dict[str, Tensor] = field(default_factory=dict)

    @staticmethod
    def field_name(key: int | str) -> str:
        """The name of a batch field: ``field_<i>`` for tuple positions, the key itself for dicts."""
        return f"field_{key}" if isinstance(key, int) else str(key)

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
        meta: dict[str, Any] = {}
        kept = {SampleSet.field_name(k) for k in spec.keep}
        for k, v in extra.items():
            if k in kept and isinstance(v, Tensor):
                meta[k] = v.detach()
            else:
                _per_sample(v, b, k, meta)
        missing = kept - set(meta)
        if missing:
            raise CerebroConfigError(f"the batches have no tensor field {sorted(missing)} (fields: "
                                     f"{sorted(extra)}); check the target's reference_input")
        yield x.detach(), (y.detach() if y is not None else None), meta


class _Rows:
    """Where collected inputs go: a list of rows in memory, or fixed-size rows in a raw file under ``spill_dir``."""

    def __init__(self, capacity: int, spill_dir: str | os.PathLike[str] | None, spill_bytes: int) -> None:
        self.capacity, self.spill_dir, self.spill_bytes = capacity, spill_dir, spill_bytes
        self.mem: dict[int, Tensor] = {}
        self.file: Any = None
        self.shape: tuple[int, ...] = ()
        self.dtype: torch.dtype | None = None

    def put(self, slot: int, row: Tensor) -> None:
        if self.dtype is None:
            self.shape, self.dtype = tuple(row.shape), row.dtype
            if self.spill_dir is not None and row.numel() * row.element_size() * self.capacity > self.spill_bytes:
                self.file = tempfile.NamedTemporaryFile(dir=self.spill_dir, prefix="samples-", suffix=".raw",
                                                        delete=False)
        if tuple(row.shape) != self.shape:
            raise CerebroConfigError(f"samples have different shapes: {tuple(row.shape)} vs {self.shape}; cerebro "
                                     "needs one input shape per sample set")
        if self.file is None:
            self.mem[slot] = row.clone()
        else:
            data = row.contiguous().numpy().tobytes()
            self.file.seek(slot * len(data))
            self.file.write(data)

    def tensor(self, order: list[int]) -> Tensor | RowTensor:
        """The rows of ``order`` (slots), in that order."""
        if self.file is None:
            return torch.stack([self.mem[i] for i in order])
        self.file.flush()
        src = RowTensor(self.file.name, (self.capacity, *self.shape), _np_dtype(self.dtype))
        if order != list(range(len(order))):  # reservoir slots are not in stream order: rewrite them in order
            with tempfile.NamedTemporaryFile(dir=self.spill_dir, prefix="samples-", suffix=".raw", delete=False) as f:
                for i in order:
                    f.write(src[i : i + 1].numpy().tobytes())
            self.file.close()
            os.unlink(self.file.name)
            return RowTensor(f.name, (len(order), *self.shape), _np_dtype(self.dtype))
        self.file.close()
        return RowTensor(self.file.name, (len(order), *self.shape), _np_dtype(self.dtype))


def _np_dtype(dtype: torch.dtype | None) -> np.dtype:
    return torch.zeros(0, dtype=dtype).numpy().dtype


def collect_samples(
    loader: Iterable[Any],
    max_samples: int,
    spec: BatchSpec | None = None,
    sampling: str = "first",
    seed: int = 0,
    source: str = "dataloader",
    spill_dir: str | os.PathLike[str] | None = None,
    spill_bytes: int = 64 << 20,
) -> SampleSet:
    """Take the first ``max_samples`` samples in order, or a seeded uniform draw (reservoir) over the whole loader.

    Inputs are copied to plain CPU tensors, so batches produced under ``torch.inference_mode`` can enter autograd.
    When they would take more than ``spill_bytes`` and ``spill_dir`` is given, they go to a file there instead of
    memory (read back chunk by chunk), so memory stays flat however many samples are studied.
    """
    spec = spec or BatchSpec()
    rows = _Rows(max_samples, spill_dir, spill_bytes)
    ys: dict[int, Tensor] = {}
    metas: dict[int, dict[str, Any]] = {}
    slot_pos: dict[int, int] = {}  # slot -> position in the stream
    rng = np.random.default_rng(seed)
    seen = 0
    has_y = True
    for x, y, meta in _rows(loader, spec):
        has_y = has_y and y is not None
        x = x.detach().cpu()
        for r in range(int(x.shape[0])):
            pos = seen + r
            if pos < max_samples:
                slot = pos
            elif sampling == "random":
                j = int(rng.integers(0, pos + 1))
                if j >= max_samples:
                    continue
                slot = j
            else:
                break
            rows.put(slot, x[r])
            slot_pos[slot] = pos
            if y is not None:
                ys[slot] = y[r].detach().cpu().clone()
            metas[slot] = {k: v[r] for k, v in meta.items()}
        seen += int(x.shape[0])
        if sampling == "first" and seen >= max_samples:
            break
    if not slot_pos:
        return SampleSet(x=torch.zeros(0), y=None, source=source, available=seen)
    order = sorted(slot_pos, key=slot_pos.__getitem__)
    keys = set.intersection(*(set(metas[s]) for s in order))
    kept = {SampleSet.field_name(k) for k in spec.keep}
    return SampleSet(
        x=rows.tensor(order),
        y=torch.stack([ys[s] for s in order]) if has_y and len(ys) == len(order) else None,
        metadata={k: [metas[s][k] for s in order] for k in sorted(keys - kept)},
        extras={k: torch.stack([metas[s][k].cpu().clone() for s in order]) for k in sorted(kept & keys)},
        indices=np.array([slot_pos[s] for s in order], dtype=np.int64),
        source=source,
        available=seen,
    )
