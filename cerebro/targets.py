"""Target adapters: turn any model output into one scalar per sample, the quantity every attribution explains.

Captum itself recommends wrapping the forward function so that it returns the attribution targets instead of
passing ``target=`` (see ``captum._utils.common._select_targets``). :class:`ScalarForward` does exactly that, so a
``(B, 1)`` regression head, a ``(B,)`` head and ``(B, K)`` logits all reach Captum as a ``(B,)`` tensor.
Per-sample choices (the class to explain) travel as an additional forward argument, which Captum expands with
the batch when Integrated Gradients multiplies it by ``n_steps``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cerebro.errors import CerebroConfigError, choice_error
from cerebro.plain import to_plain

__all__ = ["pick_output", "TargetAdapter", "RegressionTarget", "ClassificationTarget", "NormTarget", "SimilarityTarget", "CallableTarget",
           "ScalarForward", "build_target", "TARGETS"]


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _tensor_fields(output: Any) -> list[tuple[str, str]]:
    """The tensors in a tuple, dict or output object, as ``(accessor, shape)``, e.g. ``("['logits']", "(2, 3)")``."""
    if isinstance(output, (tuple, list)):
        items = [(f"[{i}]", v) for i, v in enumerate(output)]
    elif isinstance(output, Mapping):
        items = [(f"[{k!r}]", v) for k, v in output.items()]
    else:
        items = [(f".{k}", v) for k, v in (vars(output).items() if hasattr(output, "__dict__") else ())]
    return [(acc, _shape(v)) for acc, v in items if isinstance(v, Tensor)]


def _require_tensor(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        fields = _tensor_fields(output)
        held = f" holding tensors {', '.join(f'out{a} {s}' for a, s in fields[:8])}" if fields else ""
        example = f", e.g. `return self.model(x){fields[0][0]}`" if fields else ""
        raise CerebroConfigError(
            f"the model returned {type(output).__name__}{held}, but cerebro needs its forward to return one tensor; "
            f"set output_key to pick it, or wrap the model in an nn.Module whose forward(x) returns the prediction "
            f"tensor{example}"
        )
    return output


def pick_output(output: Any, key: int | str) -> Any:
    """``output[key]`` of a tuple/list (position), mapping (key) or output object (attribute): ``output_key``."""
    try:
        if isinstance(key, int) and isinstance(output, (tuple, list)):
            return output[key]
        if isinstance(key, str) and isinstance(output, Mapping) and key in output:
            return output[key]
        if isinstance(key, str) and not isinstance(output, Mapping) and hasattr(output, key):
            return getattr(output, key)
    except IndexError:
        pass
    fields = _tensor_fields(output)
    raise CerebroConfigError(
        f"output_key {key!r} is not in the model's {type(output).__name__} output; it holds "
        f"{', '.join(f'out{a} {s}' for a, s in fields[:8]) or 'no tensors'}")


class TargetAdapter:
    """Maps a model output to one scalar per sample. Subclasses declare ``kind`` and their options."""

    kind: ClassVar[str] = ""

    def preflight(self, output: Any, y: Tensor | None) -> None:
        """Check one batch of real output (and labels) against this adapter; raise a clear error on mismatch."""

    #: Whether predictions compare with labels (prediction metrics, failure modes, a default loss).
    supervised: ClassVar[bool] = False

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor | None:
        """Per-sample choice passed to :meth:`select` (e.g. the class to explain), or ``None``."""
        return None

    def batch_inputs(self) -> tuple[int | str, ...]:
        """Batch fields (tuple positions or dict keys) this target needs besides the input, e.g. a reference."""
        return ()

    def per_sample_arg(self, outputs: Tensor, samples: Any, embed: Callable[[Tensor], Tensor]) -> Tensor | None:
        """The per-sample argument of :meth:`select` for every sample (``embed`` runs the model without gradients).
        Captum and the engine repeat it with the batch, so it never has to be captured in a closure."""
        return self.per_sample_index(outputs, samples.y)

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        """Return the ``(B,)`` scalars to explain."""
        raise NotImplementedError

    def labels(self, y: Tensor) -> Tensor:
        """Labels in the shape :meth:`predictions` compares against."""
        return y

    def predictions(self, output: Tensor) -> Tensor:
        """Per-sample prediction (regression value or predicted class); supervised targets only."""
        raise NotImplementedError(f"target {self.kind} makes no predictions to compare with labels")

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """Default per-sample loss for this kind of target (used when the module has no usable loss)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Options for ``summary.json``."""
        return {"kind": self.kind}


@dataclass
class RegressionTarget(TargetAdapter):
    """Regression: outputs ``(B,)``, ``(B, 1)``, or ``(B, K)`` with ``index`` choosing the output to explain."""

    index: int | None = None
    kind: ClassVar[str] = "regression"
    supervised: ClassVar[bool] = True

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        fix = "set target: {kind: regression, index: k}"
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            if self.index not in (None, 0):
                raise CerebroConfigError(f"target index {self.index} is out of range for output shape {_shape(out)}")
        elif out.ndim == 2:
            if self.index is None:
                raise CerebroConfigError(
                    f"regression target got output shape {_shape(out)} with {out.shape[1]} outputs: if they are class "
                    f"logits, set target: classification; for {out.shape[1]} regression outputs, choose one: {fix} "
                    f"with k in [0, {out.shape[1]})"
                )
            if not 0 <= self.index < out.shape[1]:
                raise CerebroConfigError(f"target index {self.index} is out of range for output shape {_shape(out)}")
        else:
            raise CerebroConfigError(
                f"regression target expects outputs of shape (B,), (B, 1) or (B, K); the model returned {_shape(out)}. "
                "Use target: classification for logits, or a model head that returns one value per sample"
            )
        if y is not None:
            per = y.reshape(y.shape[0], -1).shape[1] if y.ndim else 0
            k = 1 if out.ndim == 1 else out.shape[1]
            if y.ndim == 0 or per not in (1, k):
                raise CerebroConfigError(f"labels of shape {_shape(y)} do not match regression outputs {_shape(out)}")

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        return output if output.ndim == 1 else output[:, self.index or 0]

    def labels(self, y: Tensor) -> Tensor:
        y = y.reshape(y.shape[0], -1).float()
        return y[:, 0] if y.shape[1] == 1 else y[:, self.index or 0]

    def predictions(self, output: Tensor) -> Tensor:
        return self.select(output).float()

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return (self.predictions(output) - self.labels(y).to(output.device)) ** 2

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index}


_CLASS_CHOICES = ("predicted", "label")
_SCORES = ("logit", "probability", "log_probability")


@dataclass
class ClassificationTarget(TargetAdapter):
    """Classification logits ``(B, K)``: explain the ``class`` (predicted | label | an int) ``score``."""

    class_: str | int = "predicted"
    score: str = "logit"
    kind: ClassVar[str] = "classification"
    supervised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.class_, bool) or not (isinstance(self.class_, int) or self.class_ in _CLASS_CHOICES):
            raise choice_error("target.class", self.class_, [*_CLASS_CHOICES, "<int>"])
        if self.score not in _SCORES:
            raise choice_error("target.score", self.score, _SCORES)

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        if out.ndim != 2 or out.shape[1] < 2:
            raise CerebroConfigError(
                f"classification target expects logits of shape (B, K) with K >= 2; the model returned {_shape(out)}. "
                "For a single logit or a value use target: regression"
            )
        k = out.shape[1]
        if isinstance(self.class_, int) and not 0 <= self.class_ < k:
            raise CerebroConfigError(f"target class {self.class_} is out of range for {k} classes")
        if self.class_ == "label":
            if y is None:
                raise CerebroConfigError("target class 'label' needs labels, but the batches carry none; use class: predicted")
            if y.is_floating_point() or y.is_complex():
                raise CerebroConfigError(
                    f"target class 'label' needs integer class labels, got {y.dtype} labels of shape {_shape(y)}; "
                    "cast them to long in the dataset or use class: predicted"
                )
        if y is not None and (y.is_floating_point() or y.is_complex()):
            # Float labels are class indices only if they hold one whole number per sample (e.g. 2.0); continuous
            # values, one-hot or probability rows would be silently truncated by .long() into wrong classes.
            flat = y.reshape(-1)
            whole = not y.is_complex() and flat.numel() == out.shape[0] and bool(torch.isfinite(flat).all()) \
                and bool((flat == flat.round()).all())
            if not whole:
                odd = flat[~torch.isfinite(flat) | (flat != flat.round())][:1].tolist() if not y.is_complex() else []
                raise CerebroConfigError(
                    f"classification target needs one class index per sample, got {y.dtype} labels of shape "
                    f"{_shape(y)} for output {_shape(out)}"
                    + (f" with non-integer values such as {odd[0]!r}" if odd else "")
                    + "; cast class labels to long in the dataset (argmax of one-hot rows), "
                    "or use target: regression for continuous labels")
        if y is not None:
            flat = y.reshape(-1)
            if flat.numel() != out.shape[0] or int(flat.min()) < 0 or int(flat.max()) >= k:
                raise CerebroConfigError(f"labels {_shape(y)} with values in [{int(flat.min())}, {int(flat.max())}] "
                                         f"do not match {k} classes of output {_shape(out)}")

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor:
        if self.class_ == "predicted":
            return output.argmax(dim=1)
        if self.class_ == "label":
            assert y is not None
            return y.reshape(-1).long().to(output.device)
        return torch.full((output.shape[0],), int(self.class_), dtype=torch.long, device=output.device)

    def _scores(self, output: Tensor) -> Tensor:
        if self.score == "probability":
            return output.softmax(dim=1)
        if self.score == "log_probability":
            return output.log_softmax(dim=1)
        return output

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            index = self.per_sample_index(output, None)
        return self._scores(output).gather(1, index.reshape(-1, 1).to(output.device)).squeeze(1)

    def labels(self, y: Tensor) -> Tensor:
        return y.reshape(-1).long()

    def predictions(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), self.labels(y).to(output.device), reduction="none")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": self.class_, "score": self.score}


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


@dataclass
class CallableTarget(TargetAdapter):
    """A user function ``fn(model_output, batch) -> (B,)``; ``batch`` is a dict with the labels under ``"target"``
    (repeated with the output when attribution methods expand the batch)."""

    fn: Callable[..., Tensor] = None  # type: ignore[assignment]
    path: str = ""
    kind: ClassVar[str] = "callable"

    def per_sample_index(self, output: Tensor, y: Tensor | None) -> Tensor | None:
        return y

    def preflight(self, output: Any, y: Tensor | None) -> None:
        out = _require_tensor(output)
        value = self.select(out, None if y is None else y[: out.shape[0]])
        if not isinstance(value, Tensor) or tuple(value.shape) != (out.shape[0],):
            raise CerebroConfigError(f"target {self.path} must return one scalar per sample, shape ({out.shape[0]},); "
                                     f"it returned {_shape(value)} for outputs {_shape(out)}")

    def select(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        return self.fn(output, {} if index is None else {"target": index.to(output.device)})

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "_target_": self.path}


TARGETS: dict[str, type[TargetAdapter]] = {"regression": RegressionTarget, "classification": ClassificationTarget,
                                           "similarity": SimilarityTarget, "norm": NormTarget}
_OPTIONS = {"regression": {"index": "index"}, "classification": {"class": "class_", "score": "score"},
            "similarity": {"reference": "reference", "reference_input": "reference_input"}, "norm": {}}


def _callable_target(spec: dict[str, Any]) -> CallableTarget:
    from hydra.utils import get_method

    path = spec.pop("_target_")
    bad = [k for k in spec if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise CerebroConfigError(f"target `_target_: {path}` takes keyword arguments, got keys {bad!r}")
    try:
        fn = get_method(path)
    except Exception as err:  # noqa: BLE001 - hydra raises several types for bad paths
        raise CerebroConfigError(f"target `_target_: {path}` cannot be imported: {err}") from err
    return CallableTarget(fn=functools.partial(fn, **spec) if spec else fn, path=path)


def build_target(spec: str | Mapping[str, Any] | TargetAdapter) -> TargetAdapter:
    """Build an adapter from ``"regression"``, ``{kind: classification, class: label}`` or an adapter instance."""
    if isinstance(spec, TargetAdapter):
        return spec
    spec = to_plain(spec, "`target`")
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise CerebroConfigError(f"`target` must be a name or a mapping with `kind`, got {type(spec).__name__}: {spec!r}")
    spec = dict(spec)
    if "_target_" in spec:
        return _callable_target(spec)
    kind = spec.pop("kind", None)
    if not isinstance(kind, str) or kind not in TARGETS:  # a list or dict kind is unhashable: no dict lookup
        raise choice_error("target.kind", kind, TARGETS)
    allowed = _OPTIONS[kind]
    kwargs = {}
    for key, value in spec.items():
        if key not in allowed:
            raise choice_error(f"target option for {kind}", key, allowed)
        kwargs[allowed[key]] = value
    if kind == "regression" and kwargs.get("index") is not None:
        idx = kwargs["index"]
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise CerebroConfigError(f"`target.index` must be a non-negative int, got {idx!r}")
    return TARGETS[kind](**kwargs)


class ScalarForward(nn.Module):
    """``forward(x, index=None) -> (B,)``: the model followed by its target adapter, ready for Captum."""

    def __init__(self, model: nn.Module, adapter: TargetAdapter) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        return self.adapter.select(self.model(x), index)
