"""Degenerate maps (relative range), activations per call site, and completeness for every method that claims it.

Models here are small torch modules; the same checks on real third-party models are in ``tests/zoo/``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cerebro.diagnostics.deeplift import unsupported_nonlinearities
from cerebro.engine.attribution import MapStats
from cerebro.engine.completeness import completeness_metrics
from cerebro.engine.degenerate import constant_rows, is_constant
from tests.autopsy_helpers import autopsy, load_array


# -- degenerate maps ---------------------------------------------------------------------------------------------
def test_constant_rows_use_a_relative_range() -> None:
    base = np.full((3, 50), 0.7)
    base[1, 7] += 0.7 * 1e-7  # rounding noise of an upsampled 1x1 map: constant
    base[2, 7] += 0.7 * 1e-2  # a real (if small) structure
    assert constant_rows(base).tolist() == [True, True, False]
    assert constant_rows(np.zeros((1, 4))).tolist() == [True]
    assert constant_rows(np.array([[np.nan, 1.0, 1.0]])).tolist() == [False]  # NaN read as 0: varies (NaN flagged)
    assert is_constant(np.full((2, 3), -4.0)) and not is_constant(np.arange(6.0))


def test_map_stats_flag_nearly_constant_maps() -> None:
    stats = MapStats()
    block = np.full((4, 1, 8, 8), 3.0) + np.random.default_rng(0).normal(0, 3e-7, (4, 1, 8, 8))
    stats.update(block)
    assert stats.reasons() == ["degenerate map: every sample's map is constant (range below 0.0001 of its largest "
                               "|value|)"]
    stats = MapStats()
    block[0] += np.arange(64).reshape(1, 8, 8)
    stats.update(block)
    assert stats.reasons() == ["degenerate map: 3/4 samples have a map that is constant (range below 0.0001 of its "
                               "largest |value|)"]


class OnePixelHead(nn.Module):
    """A conv net whose last conv has a single spatial position (global pooling before it): Grad-CAM there is flat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_conv = nn.Conv2d(8, 4, 1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.head_conv(self.pool(torch.relu(self.conv(x)))))


def test_gradcam_on_a_single_position_layer_is_flagged_everywhere(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 4, (6,))
    s = autopsy(OnePixelHead(), (x, y), tmp_path, [{"layer_gradcam": {"layer": "head_conv", "relu": False}},
                                                   {"sanity_checks": {"samples": 3, "layers": 1}}],
                target="classification")
    rec = s["diagnostics"]["layer_gradcam"]
    maps = load_array(tmp_path, "layer_gradcam", "attributions")
    assert maps.shape == (6, 1, 16, 16)
    assert np.abs(maps).max() > 0  # not zero: constant, which the old exact test (range == 0) could miss
    assert rec["status"] == "ok"
    assert any(f.startswith("degenerate map: every sample's map is constant") and f.endswith("(layer head_conv)")
               for f in rec["flags"]), rec["flags"]
    sanity = s["diagnostics"]["sanity_checks"]
    assert sanity["metrics"]["methods"]["layer_gradcam"]["degenerate"] is True
    assert any(f.startswith("sanity check: layer_gradcam: degenerate map") for f in sanity["flags"])
    figure = tmp_path / "figures" / "layer_gradcam_sample0.png"
    assert figure.is_file()  # the report shows a "degenerate map (constant)" note instead of a flat heat map


# -- activations per call site -----------------------------------------------------------------------------------
class ReusedELU(nn.Module):
    """One ``nn.ELU`` object called after a conv (B, 4, 20) and after a linear layer (B, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.elu = nn.ELU()
        self.lin = nn.Linear(80, 6)
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.elu(self.conv(x)).flatten(1)
        return self.head(self.elu(self.lin(h)))


def test_activations_keep_one_entry_per_call_site(tmp_path) -> None:
    torch.manual_seed(0)
    model = ReusedELU()
    x, y = torch.randn(10, 3, 20), torch.randn(10, 1)
    rec = autopsy(model, (x, y), tmp_path, ["activations"], batch_size=4)["diagnostics"]["activations"]
    assert rec["status"] == "ok", rec["reason"]
    per = rec["metrics"]["per_layer"]
    assert list(per) == ["conv", "elu#0", "elu#1", "lin", "head"]
    assert rec["metrics"]["reused_modules"] == ["elu"]
    assert per["elu#0"]["units"] == 4 and per["elu#1"]["units"] == 6
    with torch.no_grad():
        first = model.elu(model.conv(x)).double()
        second = model.elu(model.lin(first.float().flatten(1))).double()
    # float32 passes in batches of 4 vs one batch of 10 may use other conv/matmul kernels: each value moves by a few
    # float32 roundings, so a mean or std moves by a few epsilons of the largest |value| (not of the mean: it cancels)
    eps = float(torch.finfo(torch.float32).eps)
    for key, ref in (("elu#0", first), ("elu#1", second)):
        tol = 8 * eps * float(ref.abs().max())
        assert per[key]["mean"] == pytest.approx(float(ref.mean()), rel=0, abs=tol), key
        assert per[key]["std"] == pytest.approx(float(ref.std(unbiased=False)), rel=0, abs=tol), key
    assert "layers_not_summarised" not in rec["metrics"]


class ShapeShifter(nn.Module):
    """Its ``mid`` layer returns a different number of units depending on the batch size (cannot be summarised)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.mid = nn.Identity()
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        self.mid(h[:, : x.shape[0] // 2 + 1])
        return self.head(h)


def test_activations_name_a_layer_that_cannot_be_summarised_and_keep_the_others(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randn(6, 1)  # batches of 4 and 2: mid gives 3 then 2 units (even 1 unit would
    # be refused: broadcasting it onto the others would mix statistics of different units)
    rec = autopsy(ShapeShifter(), (x, y), tmp_path, ["activations"], batch_size=4)["diagnostics"]["activations"]
    assert rec["status"] == "ok", rec["reason"]
    assert set(rec["metrics"]["per_layer"]) == {"lin", "head"}
    assert list(rec["metrics"]["layers_not_summarised"]) == ["mid"]
    assert rec["metrics"]["layers_not_summarised"]["mid"] == (
        "ValueError: its outputs have 2 units (dim 1) in this batch, 3 before (output shape [2, 2])")
    assert any(f.startswith("activations: 1 layer call sites could not be summarised (mid: ") for f in rec["flags"])


# -- completeness -------------------------------------------------------------------------------------------------
def test_completeness_metrics() -> None:
    m = completeness_metrics(np.array([1.0, 2.01, 3.5, -1.0]), np.array([1.0, 2.0, 3.0, -1.0]))
    assert m["completeness"] == "exact"
    assert m["completeness_max_relative_error"] == pytest.approx(0.5 / 3.0)
    assert m["completeness_median_relative_error"] == pytest.approx((0.0 + 0.005) / 2)
    assert m["completeness_within_1pct"] == pytest.approx(0.75)


class ReluNet(nn.Module):
    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 5, padding=2)
        self.act = act if act is not None else nn.ReLU()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(6 * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.act(self.conv(x))))


METHODS = [{"deeplift": {}}, {"gradient_shap": {"n_samples": 64, "baselines": "zeros"}},
           {"layer_integrated_gradients": {"layer": "conv", "n_steps": 64}},
           {"layer_conductance": {"layer": "conv", "n_steps": 64}}, {"integrated_gradients": {"n_steps": 64}}]


def test_every_method_that_claims_completeness_reports_it(tmp_path) -> None:
    torch.manual_seed(0)
    model = ReluNet()
    x, y = torch.randn(6, 3, 16), torch.randn(6, 1)
    d = autopsy(model, (x, y), tmp_path, METHODS)["diagnostics"]
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).squeeze(1).double().numpy()
    for name in ("deeplift", "layer_integrated_gradients", "layer_conductance", "integrated_gradients"):
        m = d[name]["metrics"]
        assert d[name]["status"] == "ok", d[name]["reason"]
        assert m["completeness"] == "exact", name
        # DeepLift's Rescale rule on a ReLU net is exact; the others approximate an integral with 64 points
        # (measured: layer IG 0.25 %, conductance 1.7 % median relative error)
        tol = {"deeplift": 1e-4, "integrated_gradients": 1e-2, "layer_integrated_gradients": 1e-2}.get(name, 5e-2)
        assert m["completeness_median_relative_error"] < tol, (name, m)
        if name == "deeplift":
            assert m["completeness_within_1pct"] == 1.0
        assert not [f for f in d[name]["flags"] if "sum to f(x)" in f or "rule does not hold" in f]
    np.testing.assert_allclose(load_array(tmp_path, "deeplift", "gap"), gap, rtol=1e-5)
    attr = load_array(tmp_path, "deeplift", "attributions").reshape(6, -1).sum(1)
    np.testing.assert_allclose(load_array(tmp_path, "deeplift", "attribution_sum"), attr, rtol=1e-4, atol=1e-6)
    shap = d["gradient_shap"]["metrics"]  # zeros baseline: expected gradients = IG with random alphas
    assert shap["completeness"] == "expectation"
    assert shap["completeness_median_relative_error"] < 0.2


def test_deeplift_flags_nonlinearities_its_rule_does_not_cover(tmp_path) -> None:
    torch.manual_seed(0)
    model = ReluNet(nn.Hardswish())
    assert unsupported_nonlinearities(model) == {"Hardswish": 1}
    assert unsupported_nonlinearities(ReluNet(nn.ELU())) == {}  # Captum's Rescale rule covers ELU
    x, y = torch.randn(6, 3, 16) * 3, torch.randn(6, 1)
    rec = autopsy(model, (x, y), tmp_path, ["deeplift"])["diagnostics"]["deeplift"]
    m = rec["metrics"]
    assert rec["status"] == "ok"
    flag = [f for f in rec["flags"] if "rule does not hold" in f]
    assert len(flag) == 1 and "Hardswish (x1)" in flag[0]
    assert f"median {m['completeness_median_relative_error']:.3g}" in flag[0]
    assert m["completeness_median_relative_error"] > 1e-3  # measured, not assumed
