"""Target adapters: turn any model output into one scalar per sample, the quantity every attribution explains.

Captum itself recommends wrapping the forward function so that it returns the attribution targets instead of
passing ``target=`` (see ``captum._utils.common._select_targets``). :class:`ScalarForward` does exactly that, so a
``(B, 1)`` regression head, a ``(B,)`` head and ``(B, K)`` logits all reach Captum as a ``(B,)`` tensor.
Per-sample choices (the class to explain) travel as an additional forward argument, which Captum expands with
the batch when Integrated Gradients multiplies it by ``n_steps``.

One module per kind: :mod:`~cerebro.targets.base` (the interface, output picking, :class:`ScalarForward`),
:mod:`~cerebro.targets.regression`, :mod:`~cerebro.targets.classification`, :mod:`~cerebro.targets.embedding`
(norm, similarity), :mod:`~cerebro.targets.custom` (a user function) and :mod:`~cerebro.targets.registry`
(:data:`TARGETS`, :func:`build_target`).
"""

from __future__ import annotations

from cerebro.targets.base import ScalarForward, TargetAdapter, pick_output
from cerebro.targets.custom import CallableTarget
from cerebro.targets.classification import ClassificationTarget
from cerebro.targets.embedding import NormTarget, SimilarityTarget
from cerebro.targets.registry import TARGETS, build_target
from cerebro.targets.regression import RegressionTarget

__all__ = ["pick_output", "TargetAdapter", "RegressionTarget", "ClassificationTarget", "NormTarget", "SimilarityTarget", "CallableTarget",
           "ScalarForward", "build_target", "TARGETS"]
