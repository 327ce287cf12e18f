"""``layer_activation``: a layer's activations, summed over channels (or token features), on the input's grid."""

from __future__ import annotations

from captum.attr import LayerActivation as CaptumLayerActivation

from cerebro.diagnostics.layer_method import LayerMethod
from cerebro.diagnostics.layers import LayerOptions
from cerebro.registry import register_diagnostic

__all__ = ["LayerActivation"]


@register_diagnostic("layer_activation")
class LayerActivation(LayerMethod):
    """Where a layer responds: its activations summed over channels and mapped onto the input."""

    Options = LayerOptions
    method = CaptumLayerActivation
