"""The registry of target kinds and :func:`build_target`, which turns a config value into an adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cerebro.errors import CerebroConfigError, choice_error
from cerebro.plain import to_plain
from cerebro.targets.base import TargetAdapter
from cerebro.targets.custom import _callable_target
from cerebro.targets.classification import ClassificationTarget
from cerebro.targets.embedding import NormTarget, SimilarityTarget
from cerebro.targets.regression import RegressionTarget

__all__ = ["TARGETS", "build_target"]

TARGETS: dict[str, type[TargetAdapter]] = {"regression": RegressionTarget, "classification": ClassificationTarget,
                                           "similarity": SimilarityTarget, "norm": NormTarget}
_OPTIONS = {"regression": {"index": "index"}, "classification": {"class": "class_", "score": "score"},
            "similarity": {"reference": "reference", "reference_input": "reference_input"}, "norm": {}}


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
