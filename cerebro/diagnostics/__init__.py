"""Built-in diagnostics; importing this package registers them."""

from cerebro.diagnostics import activations, failure_modes, gradients, integrated_gradients, layer_gradcam, predictions
from cerebro.diagnostics.base import Diagnostic

__all__ = ["Diagnostic", "activations", "failure_modes", "gradients", "integrated_gradients", "layer_gradcam",
           "predictions"]
