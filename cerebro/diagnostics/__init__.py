"""Built-in diagnostics; importing this package registers them."""

from cerebro.diagnostics import (
    ablation,
    activations,
    attention_rollout,
    deeplift,
    failure_modes,
    faithfulness,
    gradient_shap,
    gradients,
    input_x_gradient,
    integrated_gradients,
    layer_activation,
    layer_conductance,
    layer_gradcam,
    layer_integrated_gradients,
    neuron_integrated_gradients,
    occlusion,
    predictions,
    saliency,
    sanity_checks,
    smoothgrad,
    spectral_integrated_gradients,
    training_influence,
)
from cerebro.diagnostics.base import Diagnostic

__all__ = ["Diagnostic", "ablation", "activations", "attention_rollout", "deeplift", "failure_modes", "faithfulness", "gradient_shap", "gradients",
           "input_x_gradient", "integrated_gradients", "layer_activation", "layer_conductance", "layer_gradcam",
           "layer_integrated_gradients", "neuron_integrated_gradients", "occlusion", "predictions", "saliency", "sanity_checks",
           "smoothgrad", "spectral_integrated_gradients", "training_influence"]
