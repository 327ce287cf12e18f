"""Built-in diagnostics; importing this package registers them."""

from cerebro.diagnostics import (
    ablation,
    activations,
    deeplift,
    failure_modes,
    gradient_shap,
    gradients,
    input_x_gradient,
    integrated_gradients,
    layer_gradcam,
    occlusion,
    predictions,
    saliency,
    smoothgrad,
)
from cerebro.diagnostics.base import Diagnostic

__all__ = ["Diagnostic", "ablation", "activations", "deeplift", "failure_modes", "gradient_shap", "gradients",
           "input_x_gradient", "integrated_gradients", "layer_gradcam", "occlusion", "predictions", "saliency",
           "smoothgrad"]
