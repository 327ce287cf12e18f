"""The attribution family: each method equals Captum called directly, is reproducible, and localises planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from cerebro import CerebroConfigError
from cerebro.demo import PLANTED_CHANNELS, PLANTED_WINDOW, EEGRegressor, make_eeg_dataset
from tests.autopsy_helpers import autopsy, load_array


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 10, 1)).eval()


def _f(model: nn.Module):  # noqa: ANN202
    return lambda x: model(x)[:, 0]


X = torch.randn(6, 3, 10, generator=torch.Generator().manual_seed(0))


def _seeded(fn):  # noqa: ANN001, ANN202
    torch.manual_seed(0)  # the diagnostic seeds torch and numpy with seed + first sample of the chunk (0 here)
    np.random.seed(0)
    return fn()


CASES = {
    "saliency": ({}, lambda m: Saliency(_f(m)).attribute(X, abs=True)),
    "input_x_gradient": ({}, lambda m: InputXGradient(_f(m)).attribute(X)),
    "deeplift": ({}, lambda m: DeepLift(_Wrap(m)).attribute(X, baselines=torch.zeros_like(X))),
    "gradient_shap": ({"baselines": "zeros", "n_samples": 5},
                      lambda m: _seeded(lambda: GradientShap(_f(m)).attribute(X, baselines=torch.zeros(1, 3, 10),
                                                                               n_samples=5, stdevs=0.0))),
    "smoothgrad": ({"nt_samples": 4, "noise_level": 0.1},
                   lambda m: _seeded(lambda: NoiseTunnel(Saliency(_f(m))).attribute(
                       X, nt_type="smoothgrad", nt_samples=4, nt_samples_batch_size=4,
                       stdevs=0.1 * float(X.max() - X.min()), abs=True))),
    "occlusion": ({"window": [1, 5]}, lambda m: Occlusion(_f(m)).attribute(X, sliding_window_shapes=(1, 5),
                                                                             strides=(1, 5), baselines=0.0)),
    "feature_ablation": ({}, lambda m: FeatureAblation(_f(m)).attribute(X, baselines=0.0)),
}


class _Wrap(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)[:, 0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_equals_captum(tmp_path, name: str) -> None:
    options, reference = CASES[name]
    model = _model()
    summary = autopsy(model, (X, torch.randn(6, 1)), tmp_path, [{name: options}], batch_size=6)
    rec = summary["diagnostics"][name]
    assert rec["status"] == "ok", rec["reason"]
    attr = load_array(tmp_path, name, "attributions")
    expected = reference(model).detach().numpy()
    assert attr.shape == (6, 3, 10)
    np.testing.assert_allclose(attr, expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(load_array(tmp_path, name, "indices"), np.arange(6))
    assert (tmp_path / "figures" / f"{name}_heatmap.png").is_file()


def test_stochastic_methods_are_reproducible_and_leave_the_rng_alone(tmp_path) -> None:
    model = _model()
    torch.manual_seed(123)
    np.random.seed(7)
    before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = autopsy(model, (X,), tmp_path / "a", ["gradient_shap", "smoothgrad"])
    assert torch.equal(torch.get_rng_state(), before)  # the loader's draw and the methods' draws are undone
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    autopsy(model, (X,), tmp_path / "b", ["gradient_shap", "smoothgrad"])
    for name in ("gradient_shap", "smoothgrad"):
        assert a["diagnostics"][name]["status"] == "ok"
        # equal by construction: the same seeded draws and the same float32 kernels in one process
        np.testing.assert_array_equal(load_array(tmp_path / "a", name, "attributions"),
                                      load_array(tmp_path / "b", name, "attributions"))


def test_channel_and_temporal_ablation_drops(tmp_path) -> None:
    model = _model()
    summary = autopsy(model, (X, torch.randn(6, 1)), tmp_path,
                      ["channel_ablation", {"temporal_ablation": {"window": 4}}])
    assert summary["status"] == "ok"
    with torch.no_grad():
        fx = model(X)[:, 0]
        # a drop is f(x) - f(ablated x), float32 passes batched differently from the reference's: it carries their
        # absolute error, a few roundings of the 60-term sums behind f (1e-5 of |f|, not of the drop: it may cancel)
        tol = 1e-6 + 1e-5 * float(fx.abs().max())
        for c in range(3):
            xa = X.clone()
            xa[:, c] = 0
            np.testing.assert_allclose(load_array(tmp_path, "channel_ablation", "channel_drop")[:, c],
                                       (fx - model(xa)[:, 0]).numpy(), atol=tol)
        drops = load_array(tmp_path, "temporal_ablation", "time_drop")
        assert drops.shape == (6, 3)  # windows 0-3, 4-7, 8-9
        xa = X.clone()
        xa[:, :, 8:] = 0
        np.testing.assert_allclose(drops[:, 2], (fx - model(xa)[:, 0]).numpy(), atol=tol)
    assert summary["diagnostics"]["channel_ablation"]["metrics"]["mean_channel_drop"] == pytest.approx(
        load_array(tmp_path, "channel_ablation", "channel_drop").mean(0).tolist(), abs=1e-6)


def test_family_configuration_errors(tmp_path) -> None:
    with pytest.raises(CerebroConfigError, match="Did you mean 'nt_samples'"):
        autopsy(_model(), (X,), tmp_path / "x", [{"smoothgrad": {"n_samples": 3}}])
    summary = autopsy(_model(), (X,), tmp_path / "o", [{"occlusion": {"window": [4, 5]}}])
    assert "occlusion.window [4, 5] does not fit the input shape [3, 10]" in summary["diagnostics"]["occlusion"]["reason"]
    flat = autopsy(nn.Linear(5000, 1), (torch.randn(2, 5000),), tmp_path / "f", ["feature_ablation"])
    assert "use channel_ablation, temporal_ablation or occlusion" in flat["diagnostics"]["feature_ablation"]["reason"]
    img = autopsy(nn.Sequential(nn.Flatten(), nn.Linear(48, 1)), (torch.randn(2, 3, 4, 4),), tmp_path / "i",
                  ["channel_ablation"])
    assert "needs (channels, time) inputs" in img["diagnostics"]["channel_ablation"]["reason"]


@pytest.fixture(scope="module")
def planted() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y, _ = make_eeg_dataset(384, n_chans=16, n_times=200, seed=0)
    model = EEGRegressor(n_chans=16, n_times=200)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(10):
        for i in range(0, 384, 32):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    return model.eval(), x[:24], y[:24]


@pytest.mark.parametrize("name", ["saliency", "occlusion", "channel_ablation", "input_x_gradient", "smoothgrad"])
def test_planted_signal_localisation(tmp_path, planted, name: str) -> None:
    model, x, y = planted
    summary = autopsy(model, (x, y), tmp_path, [name])
    assert summary["diagnostics"][name]["status"] == "ok"
    a = np.abs(load_array(tmp_path, name, "attributions")).mean(0)
    if name == "channel_ablation":
        share = a[list(PLANTED_CHANNELS)].sum() / a.sum()
        area = len(PLANTED_CHANNELS) / a.shape[0]
    else:
        lo, hi = PLANTED_WINDOW
        share = a[list(PLANTED_CHANNELS), lo:hi].sum() / a.sum()
        area = len(PLANTED_CHANNELS) * (hi - lo) / a.size
    assert share > 2.0 * area, (name, share, area)


def test_per_sample_figures_for_images_signals_and_degenerate_maps(tmp_path) -> None:
    from matplotlib.figure import Figure

    from cerebro.report.overlays import sample_figure

    img, sig = np.random.default_rng(0).random((3, 8, 8)), np.random.default_rng(1).random((4, 20))
    for x, attr in ((img, img - 0.5), (img, np.ones((1, 8, 8))), (sig, sig), (sig, np.ones((1, 20))),
                    (sig, np.zeros((4, 20))), (sig, np.full((4, 20), np.nan))):
        fig = sample_figure(x, attr, "t")
        assert isinstance(fig, Figure) and fig.axes
    summary = autopsy(_model(), (X,), tmp_path, ["saliency"])
    arts = summary["diagnostics"]["saliency"]["artifacts"]
    assert [a for a in arts if "sample" in a] == [f"figures/saliency_sample{i}.png" for i in range(4)]
    assert all((tmp_path / a).stat().st_size > 1000 for a in arts if a.endswith(".png"))
