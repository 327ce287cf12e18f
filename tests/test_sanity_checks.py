"""Sanity checks (Adebayo et al. 2018): IG passes, a weight-independent 'explainer' fails and is flagged."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

import cerebro
from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.diagnostics.sanity_checks import spearman
from tests.autopsy_helpers import autopsy


@cerebro.register_diagnostic("edge_detector")
class EdgeDetector(AttributionDiagnostic):
    """A broken explainer: |x[t+1] - x[t]|, the same whatever the model's weights (an edge detector)."""

    def blocks(self, ctx, state, samples) -> Iterator:  # noqa: ANN001
        x = ctx.x(samples)
        edges = torch.zeros_like(x)
        edges[..., 1:] = (x[..., 1:] - x[..., :-1]).abs()
        yield samples.start, {"attributions": edges.cpu().numpy()}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv1d(8, 8, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(8 * 12, 3)).eval()


def test_spearman_of_identical_and_reversed_maps() -> None:
    a = np.arange(12, dtype=float).reshape(2, 6) + 1
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, a[:, ::-1].copy()) == pytest.approx(-1.0)


def test_ig_passes_and_a_broken_explainer_fails(tmp_path) -> None:
    x = torch.randn(10, 3, 12, generator=torch.Generator().manual_seed(1))
    summary = autopsy(_model(), (x,), tmp_path, [{"integrated_gradients": {"n_steps": 32}}, "edge_detector",
                                                  "sanity_checks"], target="classification")
    rec = summary["diagnostics"]["sanity_checks"]
    assert rec["status"] == "ok", rec["reason"]
    methods = rec["metrics"]["methods"]
    ig, edge = methods["integrated_gradients"], methods["edge_detector"]
    assert ig["randomized_layers"] == ["5", "2", "0"]  # top-down: Linear, then the convolutions
    assert len(ig["spearman"]) == 3 and ig["model_randomization"] == "pass" and ig["final_spearman"] < 0.5
    assert ig["completeness"] == "pass" and ig["completeness_median_relative_error"] < 0.05
    assert ig["target_randomization"] == "pass"
    assert edge["model_randomization"] == "fail" and edge["final_spearman"] == pytest.approx(1.0)
    assert any(f.startswith("sanity check failed: edge_detector maps barely change") for f in rec["flags"])
    assert not any("integrated_gradients" in f for f in rec["flags"])
    assert (tmp_path / "figures" / "sanity_checks_randomization.png").is_file()


def test_without_attribution_methods_the_check_is_skipped(tmp_path) -> None:
    summary = autopsy(_model(), (torch.randn(4, 3, 12),), tmp_path, ["predictions", "sanity_checks"],
                      target="classification")
    rec = summary["diagnostics"]["sanity_checks"]
    assert rec["status"] == "skipped" and "no attribution diagnostic" in rec["reason"]


def test_the_users_model_is_not_randomized(tmp_path) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    autopsy(model, (torch.randn(4, 3, 12),), tmp_path, [{"integrated_gradients": {"n_steps": 4}}, "sanity_checks"],
            target="classification")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
