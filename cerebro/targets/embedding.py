"""Embedding targets: the norm of each output vector, or its cosine similarity to a reference."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cerebro.errors import CerebroConfigError
from cerebro.targets.base import TargetAdapter, _require_tensor, _shape

__all__ = ["NormTarget", "SimilarityTarget"]


def _vector_output(output: Any, kind: str) -> Tensor:
    out = _require_tensor(output)
    if out.ndim < 2:
        raise CerebroConfigError(f"{kind} target needs vector outputs (B, D); the model returned {_shape(out)}. "
                                 "For one value per sample use target: regression")
    return out


@dataclass
class NormTarget(TargetAdapter):
    """The L2 norm of each sample's output vector (embeddings ``(B, D)``, or any ``(B, ...)``, flattened)."""

    kind: ClassVar[str] = "norm"

    def preflight(self, output: Any, y: Tensor | None) -> None:
        _vector_output(output, "norm")

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        return output.flatten(1).norm(dim=1)


def _load_vectors(path: str) -> Tensor:
    if not os.path.isfile(path):
        raise CerebroConfigError(f"target.reference {path!r} does not exist (a .npy or .pt file of shape (D,) or (N, D))")
    try:
        data = np.load(path) if path.endswith(".npy") else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a configuration problem
        raise CerebroConfigError(f"cannot read target.reference {path!r}: {err}") from err
    ref = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data).float()
    if ref.ndim not in (1, 2):
        raise CerebroConfigError(f"target.reference {path!r} has shape {tuple(ref.shape)}; expected (D,) or (N, D)")
    return ref


@dataclass
class SimilarityTarget(TargetAdapter):
    """Cosine similarity between each sample's embedding and a reference (metric learning, face verification).

    The reference is a file (``reference``: one ``(D,)`` vector, or ``(N, D)`` with one row per position in the
    loader, matched by sample index), or another input of the same batch (``reference_input``: tuple position or
    dict key) whose embedding, computed without gradients, is that sample's reference.
    """

    reference: str | None = None
    reference_input: int | str | None = None
    kind: ClassVar[str] = "similarity"

    def __post_init__(self) -> None:
        if (self.reference is None) == (self.reference_input is None):
            raise CerebroConfigError("target similarity needs exactly one of `reference` (a .npy/.pt file) or "
                                     "`reference_input` (the batch field holding the reference input)")
        if self.reference is not None and not isinstance(self.reference, (str, os.PathLike)):
            raise CerebroConfigError(f"`target.reference` must be a path to a .npy/.pt file, got {self.reference!r}")
        if self.reference is not None:
            self.reference = os.fspath(self.reference)
        ref_in = self.reference_input
        if ref_in is not None and (isinstance(ref_in, bool) or not isinstance(ref_in, (int, str))):
            raise CerebroConfigError("`target.reference_input` must be a tuple position (int) or a dict key (str), "
                                     f"got {ref_in!r}")
        self._vectors = _load_vectors(self.reference) if self.reference is not None else None

    def batch_inputs(self) -> tuple[int | str, ...]:
        return () if self.reference_input is None else (self.reference_input,)

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _vector_output(output, "similarity")
        if self._vectors is not None and self._vectors.shape[-1] != out.flatten(1).shape[1]:
            raise CerebroConfigError(f"target.reference vectors have {self._vectors.shape[-1]} dimensions but the "
                                     f"model's embeddings {_shape(out)} have {out.flatten(1).shape[1]}")

    def per_sample_arg(self, outputs: Tensor, samples: Any, embed: Callable[[Tensor], Tensor]) -> Tensor:
        d = outputs.flatten(1).shape[1]
        if self._vectors is not None:
            if self._vectors.ndim == 1:
                return self._vectors.expand(outputs.shape[0], -1).clone()
            idx = torch.as_tensor(samples.indices, dtype=torch.long)
            if int(idx.max()) >= self._vectors.shape[0]:
                raise CerebroConfigError(f"target.reference has {self._vectors.shape[0]} rows but the samples reach "
                                         f"position {int(idx.max())} of the loader; give one row per loader sample")
            return self._vectors[idx]
        name = samples.field_name(self.reference_input)
        if name not in samples.extras:
            raise CerebroConfigError(f"target.reference_input {self.reference_input!r} is not a field of the batches")
        ref = embed(samples.extras[name]).flatten(1).float()
        if ref.shape != (outputs.shape[0], d):
            raise CerebroConfigError(f"the reference inputs embed to {tuple(ref.shape)}, expected {(outputs.shape[0], d)}")
        return ref

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            raise CerebroConfigError("similarity target needs its reference vectors (per_sample_arg)")
        return F.cosine_similarity(output.flatten(1).float(), index.to(output.device).float(), dim=1)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "reference": self.reference, "reference_input": self.reference_input}
