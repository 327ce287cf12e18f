"""Layer and neuron attribution methods: equal to Captum, maps on the input's grid, tokens handled like Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerConductance, LayerIntegratedGradients, NeuronIntegratedGradients

from cerebro import CerebroConfigError
from cerebro.diagnostics.layers import to_grid
from tests.autopsy_helpers import autopsy, load_array
from tests.test_attribution_family import X, _f, _model
from tests.test_tokens import TinyViT


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        ("layer_integrated_gradients", {"layer": "0", "n_steps": 16},
         lambda m: LayerIntegratedGradients(_f(m), m[0]).attribute(X, baselines=torch.zeros_like(X), n_steps=16)),
        ("layer_conductance", {"layer": "0", "n_steps": 16},
         lambda m: LayerConductance(_f(m), m[0]).attribute(X, baselines=torch.zeros_like(X), n_steps=16)),
        ("layer_activation", {"layer": "1"}, lambda m: m[1](m[0](X))),
    ],
)
def test_layer_methods_equal_captum_summed_over_channels(tmp_path, name: str, options: dict, reference) -> None:  # noqa: ANN001
    model = _model()
    summary = autopsy(model, (X, torch.randn(6, 1)), tmp_path, [{name: options}], batch_size=6)
    rec = summary["diagnostics"][name]
    assert rec["status"] == "ok", rec["reason"]
    assert rec["metrics"]["layer"] == options["layer"] and rec["metrics"]["layout"] == "channels_first"
    maps = load_array(tmp_path, name, "attributions")
    assert maps.shape == (6, 1, 10)  # (N, 1, T): a Conv1d map on the time axis
    expected = reference(model).detach().sum(dim=1, keepdim=True).numpy()
    np.testing.assert_allclose(maps, expected, atol=1e-5, rtol=1e-4)


def test_layer_activation_on_transformer_tokens(tmp_path) -> None:
    model = TinyViT().eval()
    x = torch.randn(3, 3, 16, 16)
    summary = autopsy(model, (x,), tmp_path, [{"layer_activation": {"layer": "encoder.layers.0"}}],
                      target="classification")
    rec = summary["diagnostics"]["layer_activation"]
    assert rec["status"] == "ok" and rec["metrics"]["layout"] == "tokens"
    held = []
    h = model.encoder.layers[0].register_forward_hook(lambda m, i, o: held.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    grid = to_grid(held[0], {"prefix": 1, "grid": (4, 4)}).sum(1, keepdim=True)
    expected = LayerAttribution.interpolate(grid, (16, 16), interpolate_mode="bilinear")
    # float32 encoder outputs (the reference may take the fused fast path) summed over the embedding: ~1e-6 relative
    np.testing.assert_allclose(load_array(tmp_path, "layer_activation", "attributions"), expected.numpy(), rtol=1e-5,
                               atol=1e-5)


def test_neuron_integrated_gradients(tmp_path) -> None:
    model = _model()
    summary = autopsy(model, (X,), tmp_path, [{"neuron_integrated_gradients": {"layer": "0", "neuron": [2, 5],
                                                                               "n_steps": 16}}])
    rec = summary["diagnostics"]["neuron_integrated_gradients"]
    assert rec["status"] == "ok" and rec["metrics"]["neuron"] == [2, 5]
    expected = NeuronIntegratedGradients(_f(model), model[0]).attribute(
        X, neuron_selector=(2, 5), baselines=torch.zeros_like(X), n_steps=16)
    np.testing.assert_allclose(load_array(tmp_path, "neuron_integrated_gradients", "attributions"),
                               expected.detach().numpy(), atol=1e-5)
    bad = autopsy(model, (X,), tmp_path / "bad", [{"neuron_integrated_gradients": {"layer": "0", "neuron": [9, 0]}}])
    assert "neuron [9, 0] is not an index of layer '0' outputs of shape [6, 10]" in \
        bad["diagnostics"]["neuron_integrated_gradients"]["reason"]
    with pytest.raises(CerebroConfigError, match="needs `layer`"):
        autopsy(model, (X,), tmp_path / "x", ["neuron_integrated_gradients"])


def test_layer_name_typo_fails_before_training() -> None:
    from cerebro.diagnostics.layer_integrated_gradients import LayerIntegratedGradients as Diag

    with pytest.raises(CerebroConfigError, match="Did you mean '0'|not a submodule"):
        Diag({"layer": "O"}).check_model(_model())
