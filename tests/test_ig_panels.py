"""Issue 20, item 5: rough (piecewise-linear) paths are refined panel by panel where the map still moves
(:mod:`cerebro.engine.panels`), against an exact IG and a fine reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cerebro.engine.integrated as integrated
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.integrated import integrated_gradients
from cerebro.targets import RegressionTarget, ScalarForward

CPU = torch.device("cpu")


def _policy(size: int = 256) -> ChunkPolicy:
    return ChunkPolicy(size, None, CPU, size)


class Hinges(nn.Module):
    """``f(p) = sum_j w_j relu(p_j - t_j)``: on the straight path from 0 to ``x`` unit ``j`` switches on at
    ``alpha = t_j / x_j``, so IG is exact in closed form: ``attr_j = w_j (x_j - max(t_j, 0))``. The last input is 1
    for every sample, so the model reads the alpha of every point it is evaluated at."""

    def __init__(self, t: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.t, self.w = t, w
        self.alphas: list[torch.Tensor] = []

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if p.requires_grad:
            self.alphas.append(p[:, -1].detach().clone())
        return (self.w * torch.relu(p - self.t)).sum(dim=1, keepdim=True)


def test_points_go_where_the_units_switch_and_the_map_is_exact() -> None:
    d = 64
    t = torch.cat([torch.linspace(0.02, 0.2, d - 2), torch.tensor([-1.0, -1.0])])
    w = torch.cat([1 + torch.arange(d - 2) / d, torch.ones(2)])
    model = Hinges(t, w)
    x = torch.tensor([1.0, 1.2, 1.5, 2.0])[:, None] * torch.ones(4, d)  # every switch at alpha < 0.2
    x[:, -1] = 1.0
    base = torch.zeros_like(x)
    exact = w * (x - t.clamp(min=0))
    fwd = ScalarForward(model, RegressionTarget())
    res = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    err = (res.attributions - exact).norm(dim=1) / exact.norm(dim=1)
    assert float(err.max()) <= 0.02, err
    assert float((res.delta.abs() / res.gap.abs()).max()) <= 0.01
    alphas = torch.cat(model.alphas)
    assert int(res.steps.sum()) == res.evaluations == alphas.numel()  # steps count every evaluated point
    # the units switch at alpha < 0.2: after the smoothed rule's 7 points and the panels' first pass (edges and
    # midpoints, 9), every point refines the panel [0, 0.25); the smoothed rule alone spends more
    refinements = alphas[4 * (7 + 9):]
    assert refinements.numel() > 0 and bool((refinements < 0.25).all()), refinements
    model.alphas.clear()
    integrated.ROUGH_POINTS, before = 0, integrated.ROUGH_POINTS
    try:
        smoothed = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    finally:
        integrated.ROUGH_POINTS = before
    assert res.evaluations < 0.7 * smoothed.evaluations, (res.evaluations, smoothed.evaluations)


@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_relu_mlp_within_the_bound_at_lower_cost(scale: float, monkeypatch) -> None:
    """The random ReLU MLP set where the smoothed rule alone left a map 2.7% off a 4,095-point reference (scale 4)
    and spent 4,336 evaluations (scale 2): every sample within 2% and 1% completeness, at a lower cost."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)).eval()
    fwd = ScalarForward(model, RegressionTarget())
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(11)) * scale
    base = torch.zeros_like(x)
    ref = integrated_gradients(fwd, x, base, None, 4095, "nested", _policy())
    res = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    err = (res.attributions - ref.attributions).norm(dim=1) / ref.attributions.norm(dim=1)
    assert float(err.max()) <= 0.02 and float((res.delta.abs() / res.gap.abs()).max()) <= 0.01
    assert int(res.steps.sum()) == res.evaluations
    monkeypatch.setattr(integrated, "ROUGH_POINTS", 0)  # the smoothed rule alone
    smoothed = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    assert res.evaluations < smoothed.evaluations, (res.evaluations, smoothed.evaluations)


def test_rough_samples_in_groups_give_the_same_maps(monkeypatch) -> None:
    """Rough samples are refined GROUP at a time (the panels' state is 9 maps per sample): the grouping changes which
    samples share a pass, not what each sample computes."""
    import cerebro.engine.panels as panels

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 1)).eval()
    fwd = ScalarForward(model, RegressionTarget())
    x = torch.randn(12, 32, generator=torch.Generator().manual_seed(11)) * 2
    base = torch.zeros_like(x)
    whole = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    levels = torch.tensor([7, 15, 31, 63, 127, 255, 511, 1023])
    assert int((~torch.isin(whole.steps, levels)).sum()) >= 6  # most samples went to the panels
    monkeypatch.setattr(panels, "GROUP", 5)
    grouped = integrated_gradients(fwd, x, base, None, None, "nested", _policy())
    assert torch.equal(grouped.steps, whole.steps) and grouped.evaluations == whole.evaluations
    torch.testing.assert_close(grouped.attributions, whole.attributions, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_steps", [40, 100])
def test_panels_keep_within_max_steps_and_flag_what_misses(max_steps: int) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)).eval()
    fwd = ScalarForward(model, RegressionTarget())
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(11)) * 2
    res = integrated_gradients(fwd, x, torch.zeros_like(x), None, None, "nested", _policy(), max_steps=max_steps)
    assert int(res.steps.max()) <= max_steps and int(res.steps.sum()) == res.evaluations
    missed = (res.delta.abs() / res.gap.abs() > 0.01) | (res.map_change > 0.02)
    assert bool(missed.any())  # this budget is too small for some samples: they are reported as they are


def test_the_diagnostic_flags_maps_still_moving_at_max_steps(tmp_path) -> None:
    """A sample complete within 1% whose map's estimated error is still above map_tolerance when max_steps runs out
    is not silently converged: map_not_converged counts it, a flag names the fix, converged.npy says which."""
    from tests.autopsy_helpers import autopsy, load_array

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)).eval()
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(11)) * 2
    summary = autopsy(model, (x,), tmp_path, [{"integrated_gradients": {"max_steps": 40}}])
    rec = summary["diagnostics"]["integrated_gradients"]
    m = rec["metrics"]
    converged = load_array(tmp_path, "integrated_gradients", "converged")
    delta, gap = (load_array(tmp_path, "integrated_gradients", k) for k in ("convergence_delta", "gap"))
    complete = np.abs(delta) <= 0.01 * np.abs(gap)
    assert m["map_not_converged"] == int((~converged & complete).sum()) > 0
    assert m["not_converged"] == int((~complete).sum())
    assert any(f.startswith(f"IG map not converged on {m['map_not_converged']}/16 samples") and "raise max_steps" in f
               for f in rec["flags"])
    assert int(load_array(tmp_path, "integrated_gradients", "steps").max()) <= 40


def test_jump_share_stops_a_relu_cnn_earlier_within_the_bound(monkeypatch) -> None:
    """A ReLU CNN (convolutions, max-pooling; 3 x 32 x 32): many units switch along each path, so the panels' error
    is about 1/sqrt(3) of the map's change and the jump share stops the samples earlier than the change itself
    would, every map still within 2% of a fine reference and completeness within 1%."""
    import cerebro.engine.panels as panels
    from cerebro.targets import ClassificationTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    base = torch.zeros_like(x)
    with torch.no_grad():
        target = model(x).argmax(1)
    fwd = ScalarForward(model, ClassificationTarget())
    ref = integrated_gradients(fwd, x, base, target, 1023, "nested", _policy(128))

    def worst(res) -> float:  # noqa: ANN001
        a, r = res.attributions.flatten(1), ref.attributions.flatten(1)
        return float(((a - r).norm(dim=1) / r.norm(dim=1)).max())

    res = integrated_gradients(fwd, x, base, target, None, "nested", _policy(128))
    assert worst(res) <= 0.02 and float((res.delta.abs() / res.gap.abs()).max()) <= 0.01
    levels = torch.tensor([7, 15, 31, 63, 127, 255, 511])
    assert bool((~torch.isin(res.steps, levels)).all())  # every sample went to the panels
    monkeypatch.setattr(panels, "JUMP_MARGIN", 10.0)  # share 1: the whole change taken as the error
    change_only = integrated_gradients(fwd, x, base, target, None, "nested", _policy(128))
    assert res.evaluations < 0.85 * change_only.evaluations, (res.evaluations, change_only.evaluations)
