"""Issue 13: the nested adaptive IG rule (evaluations, reuse, completeness), Captum equality at fixed steps,
precision decisions (with a fault injected into the reduced-precision probe), bounded sanity-check stages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

from cerebro.demo.data import make_eeg_dataset
from cerebro.demo.model import EEGRegressor
from cerebro.diagnostics.sanity_checks import layer_groups, randomization_stages
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.integrated import integrated_gradients, nested_levels, nested_rule
from cerebro.engine.ranks import mean_abs_spearman
from cerebro.targets import ClassificationTarget, RegressionTarget, ScalarForward
from tests.autopsy_helpers import autopsy, load_array

CPU = torch.device("cpu")


def _policy(size: int = 64) -> ChunkPolicy:
    return ChunkPolicy(size, None, CPU, size)


class Counting(nn.Module):
    """Counts the rows that go through the model with gradients (path points) and without (endpoints)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.points, self.endpoints = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.points += x.shape[0]
        else:
            self.endpoints += x.shape[0]
        return self.model(x)


def _tanh_mlp(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).eval()


def test_nested_rule_weights_and_levels() -> None:
    w, a = nested_rule(15)
    assert len(w) == len(a) == 15 and 0 < min(a) and max(a) < 1
    assert math.fsum(w) == pytest.approx(1.0, abs=1e-12)
    # high order on smooth integrands (Riemann sums with 15 points are off by ~1e-2): int_0^1 a^3 da = 1/4
    err15 = abs(math.fsum(wi * ai ** 3 for wi, ai in zip(w, a)) - 0.25)
    w31, a31 = nested_rule(31)
    err31 = abs(math.fsum(wi * ai ** 3 for wi, ai in zip(w31, a31)) - 0.25)
    assert err15 < 1e-6 and err31 < err15 / 32  # at least 5th order when the step halves
    # level L's points contain level L-1's
    assert set(np.round(nested_rule(7)[1], 12)) <= set(np.round(a, 12))
    assert nested_levels(512) == [3, 7, 15, 31, 63, 127, 255, 511]
    assert nested_levels(512, start_level=3)[0] == 7


def test_nested_levels_only_evaluate_new_points_and_match_the_fixed_rule() -> None:
    model = Counting(_tanh_mlp())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 8, generator=g) * torch.linspace(0.5, 6, 10)[:, None]  # from easy to hard paths
    base = torch.zeros_like(x)
    fwd = ScalarForward(model, RegressionTarget())
    res = integrated_gradients(fwd, x, base, None, None, "nested", _policy(), tolerance=1e-4, max_steps=255,
                               map_tolerance=0.05)
    steps = res.steps.tolist()
    assert len(set(steps)) >= 2, steps  # the samples stopped at different levels
    assert set(steps) <= {7, 15, 31, 63, 127, 255}
    # every point evaluated once: a sample that stopped at level n cost n points, not 7 + 15 + ... + n
    assert res.evaluations == sum(steps) == model.points
    assert model.endpoints == 2 * 10
    rel = (res.delta.abs() / res.gap.abs())
    assert (rel <= 1e-4).all(), rel
    # the reused points give the same maps as the rule computed directly at each sample's final count
    for n in set(steps):
        sel = res.steps == n
        direct = integrated_gradients(fwd, x[sel], base[sel], None, n, "nested", _policy())
        torch.testing.assert_close(res.attributions[sel], direct.attributions, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                                    "riemann_trapezoid"])
def test_fixed_steps_equal_captum_within_1e8_in_float64(method: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 12, 4)).double()
    x = torch.randn(5, 3, 12, dtype=torch.float64)
    base = torch.randn(1, 3, 12, dtype=torch.float64).expand_as(x)
    index = torch.tensor([0, 1, 2, 3, 0])
    res = integrated_gradients(ScalarForward(model, ClassificationTarget()), x, base, index, 24, method, _policy(7))
    ref, delta = CaptumIG(model).attribute(x, baselines=base, target=index, n_steps=24, method=method,
                                           return_convergence_delta=True)
    # float64 model and inputs on both sides: the two paths differ only in float64 summation order (~1e-15)
    torch.testing.assert_close(res.attributions, ref, atol=1e-8, rtol=0)
    torch.testing.assert_close(res.delta, delta, atol=1e-8, rtol=0)


@pytest.fixture(scope="module")
def trained_demo():
    """The demo regressor trained for a few epochs on planted-burst EEG windows."""
    torch.manual_seed(0)
    x, y, _ = make_eeg_dataset(n=256, n_chans=16, seed=0)
    model = EEGRegressor(n_chans=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 32):
            idx = perm[i : i + 32]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt, _ = make_eeg_dataset(n=12, n_chans=16, seed=5)
    return model.eval(), xt, yt


def test_default_ig_is_complete_per_sample_and_matches_a_256_step_reference(tmp_path, trained_demo) -> None:
    model, x, y = trained_demo
    summary = autopsy(model, (x, y), tmp_path, ["integrated_gradients"])
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok" and rec["flags"] == [], (rec["reason"], rec["flags"])
    m = rec["metrics"]
    assert m["method"] == "nested" and m["n_steps"] == "auto" and m["not_converged"] == 0
    assert m["precision"] in ("fp32", "bf16") and m["precision_decision"]["requested"] == "auto"
    deltas = load_array(tmp_path, "integrated_gradients", "convergence_delta")
    gaps = load_array(tmp_path, "integrated_gradients", "gap")
    assert (np.abs(deltas) <= 0.01 * np.abs(gaps)).all()
    steps = load_array(tmp_path, "integrated_gradients", "steps")
    assert m["evaluations"] == int(steps.sum()) < 12 * 50 // 2  # fewer than half of Captum's default 50 steps
    attr = load_array(tmp_path, "integrated_gradients", "attributions")
    ref = CaptumIG(lambda inp: model(inp)[:, 0]).attribute(x, n_steps=256, internal_batch_size=512)
    ref = ref.detach().numpy()
    rho = [mean_abs_spearman(attr[i : i + 1], ref[i : i + 1]) for i in range(len(x))]
    assert min(rho) >= 0.99, rho
    rel = np.linalg.norm((attr - ref).reshape(12, -1), axis=1) / np.linalg.norm(ref.reshape(12, -1), axis=1)
    assert rel.max() < 0.02, rel


# precision: tests/test_precision.py


# -- sanity checks within a budget ------------------------------------------------------------------------------


def _vit(depth: int = 4) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=24, depth=depth, num_heads=2, num_classes=1).eval()


def test_groups_follow_the_blocks_and_stages_are_bounded() -> None:
    vit = _vit(4)
    groups = layer_groups(vit)
    assert groups == ["", "patch_embed", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "norm", "head"]
    stages = randomization_stages(vit, "groups", 3, None)
    assert len(stages) == 3
    assert [n for n, _ in stages[0]] == ["head", "norm", "blocks.3"]
    assert stages[-1][-1] == ("", False)  # the last stage reaches the class token / position embedding
    assert sum(len(s) for s in stages) == len(groups)
    # a wrapper with one child is looked through; a Sequential of different layers is one group per layer
    demo = EEGRegressor(n_chans=4)
    assert layer_groups(demo) == ["net.0", "net.1", "net.2", "net.3", "net.5", "net.9"]
    per_layer = randomization_stages(vit, "layers", 3, None)
    n_layers = sum(1 for m in vit.modules() if not list(m.children()) and list(m.parameters(recurse=False)))
    assert len(per_layer) == n_layers and per_layer[0] == [("head", False)]
    assert len(randomization_stages(vit, "layers", 3, 5)) == 5


@pytest.mark.parametrize(("mode", "expected"), [("groups", 3), ("layers", 4)])
def test_sanity_checks_run_the_bounded_cascade(tmp_path, mode: str, expected: int) -> None:
    vit = _vit(4)
    x = torch.randn(6, 3, 16, 16)
    summary = autopsy(vit, (x,), tmp_path, ["integrated_gradients", {"sanity_checks": {
        "samples": 4, "mode": mode, "max_stages": 3, "layers": 4}}])
    rec = summary["diagnostics"]["sanity_checks"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert m["mode"] == mode and len(m["stages"]) == expected
    ig = m["methods"]["integrated_gradients"]
    assert len(ig["spearman"]) == expected and ig["originals"] == "read from its arrays"
    if mode == "groups":  # every parameter re-drawn at the end: the maps no longer follow the trained model
        assert m["stages"][-1][-1] == "(model parameters)"
        assert ig["model_randomization"] == "pass", ig


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh)")
@pytest.mark.parametrize("mode", ["auto", "bf16", "fp16"])
def test_cuda_precision_keeps_completeness_per_sample(tmp_path, trained_demo, mode: str) -> None:
    model, x, y = trained_demo
    summary = autopsy(model, (x, y), tmp_path, [{"integrated_gradients": {"precision": mode}}], device="cuda")
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok", rec["reason"]
    dec = rec["metrics"]["precision_decision"]
    assert dec["requested"] == mode and dec["points"]["fp32"] > 0
    deltas = load_array(tmp_path, "integrated_gradients", "convergence_delta")
    gaps = load_array(tmp_path, "integrated_gradients", "gap")
    # every sample converged: the ones that missed in reduced precision were finished in float32
    assert (np.abs(deltas) <= 0.01 * np.abs(gaps)).all() and rec["metrics"]["not_converged"] == 0
    attr = load_array(tmp_path, "integrated_gradients", "attributions")
    ref = CaptumIG(lambda inp: model(inp)[:, 0]).attribute(x, n_steps=256, internal_batch_size=512).detach().numpy()
    rho = [mean_abs_spearman(attr[i : i + 1], ref[i : i + 1]) for i in range(len(x))]
    assert min(rho) >= 0.98, rho


# -- the stop bounds the map's error (issue 20, item 5) -----------------------------------------------------------


def test_map_error_estimate_follows_the_convergence_ratio() -> None:
    from cerebro.engine.integrated import map_error

    change = torch.tensor([0.04, 0.04, 0.04, 0.04, 0.04])
    # ratios 1/16 (smooth), 1/8 (third order), 1/4 (kinks, or jumps by chance), 1/2 (first order), 0.8 (stalling)
    prev = torch.tensor([0.64, 0.32, 0.16, 0.08, 0.05])
    est = map_error(change, prev)
    # third order or faster: the geometric remainder; slower: at least the change itself
    torch.testing.assert_close(est, torch.tensor([0.04 / 15, 0.04 / 7, 0.04, 0.04, 0.16]), rtol=1e-6, atol=0)
    # no ratio yet (the first level): a slow one is assumed, 9 times the change; a map that did not move stops
    torch.testing.assert_close(map_error(change, None), change * 9)
    assert float(map_error(torch.zeros(1), None)) == 0.0


def test_jump_share_follows_coherence_and_spread_and_bounds_like_the_change() -> None:
    """The panels' trapezoid on a piecewise-constant integrand: the error estimate is a share of the change
    (``panels.jump_share``). Many independent jumps, simulated, leave the refined trapezoid an error about
    1/sqrt(3) of its change (E[e^2] = E[d^2] / 3); the share is 1 (the change) for parallel changes (one jump) and
    for few coordinates, and it misses the true error no more often than the change itself did."""
    from cerebro.engine.integrated import map_error
    from cerebro.engine.panels import JUMP_MARGIN, jump_share

    g = torch.Generator().manual_seed(0)
    wide, other = torch.randn(2, 4096, generator=g)
    assert float(jump_share(wide[None], wide[None] * -0.5)) == 1.0  # parallel changes: the change itself
    assert float(jump_share(wide[None, :4], other[None, :4])) == 1.0  # four coordinates: no concentration
    many = float(jump_share(wide[None], other[None]))  # unrelated changes over 4,096 coordinates
    assert abs(many - JUMP_MARGIN * math.sqrt(1 / 3) * math.sqrt(1 + 2 * math.sqrt(2 / 4096 * 3))) < 0.05, many
    change, prev = torch.tensor([0.04]), torch.tensor([0.08])
    torch.testing.assert_close(map_error(change, prev, torch.tensor([many])), change * many)
    assert torch.equal(map_error(torch.tensor([0.01]), torch.tensor([0.16]), torch.tensor([0.5])),
                       torch.tensor([0.01]) * (1 / 16) / (15 / 16))  # fast convergence: the geometric remainder

    def trap(where: torch.Tensor, size: torch.Tensor, n: int) -> torch.Tensor:
        t = torch.arange(n + 1, dtype=torch.float64) / n
        w = torch.full((n + 1,), 1 / n, dtype=torch.float64)
        w[0] = w[-1] = 1 / (2 * n)
        return w @ ((t[:, None] >= where[None, :]).to(torch.float64) @ size)

    for jumps, dims in ((400, 1024), (400, 16), (8, 64)):
        misses_share = misses_change = 0
        ratios = []
        for _ in range(150):
            where = torch.rand(jumps, generator=g, dtype=torch.float64)
            size = torch.randn(jumps, dims, generator=g, dtype=torch.float64)
            exact = ((1 - where)[:, None] * size).sum(0)
            t16, t32, t64 = (trap(where, size, n) for n in (16, 32, 64))
            ratio = float((t64 - exact).norm() / (t64 - t32).norm())
            ratios.append(ratio)
            misses_share += ratio > float(jump_share((t64 - t32)[None], (t32 - t16)[None]))
            misses_change += ratio > 1
        if jumps == 400:
            assert abs(sum(r * r for r in ratios) / len(ratios) - 1 / 3) < 0.05  # E[e^2] = E[d^2] / 3
        assert misses_share <= misses_change + 2, (jumps, dims, misses_share, misses_change)


def test_nested_stop_bounds_the_map_error_on_a_relu_network(monkeypatch) -> None:
    """A piecewise-linear network: completeness holds early (cancellation) while the map still moves; the former stop
    (map change <= 5%) let maps several % off through, the default keeps every sample near the fine reference."""
    import cerebro.engine.integrated as integrated

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)).eval()
    fwd = ScalarForward(model, RegressionTarget())
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(10)) * 2
    base = torch.zeros_like(x)
    ref = integrated_gradients(fwd, x, base, None, 4095, "nested", _policy(256))

    def worst(res) -> float:  # noqa: ANN001
        return float(((res.attributions - ref.attributions).norm(dim=1) / ref.attributions.norm(dim=1)).max())

    default = integrated_gradients(fwd, x, base, None, None, "nested", _policy(256))
    assert float((default.delta.abs() / default.gap.abs()).max()) <= 0.01
    assert worst(default) <= 0.02
    monkeypatch.setattr(integrated, "map_error", lambda change, prev, share=None: change)  # former stop
    former = integrated_gradients(fwd, x, base, None, None, "nested", _policy(256), map_tolerance=0.05)
    assert worst(former) > 0.03 and former.evaluations < default.evaluations


def test_a_ratio_that_came_out_fast_on_a_relu_path_is_not_trusted(monkeypatch) -> None:
    """A ReLU MLP near its baseline (inputs x0.05): one sample's map changed 40% from 1 to 3 points and 6.2% from 3
    to 7, a ratio of 0.22 that looks like fast convergence; the geometric remainder (1.7%) stopped it 3.3% off a fine
    reference. A ratio is trusted as geometric only at third order or faster (``FAST_RATIO``), which no jumping or
    kinked path reaches, so that sample refines on and every map ends within 2%."""
    import cerebro.engine.integrated as integrated

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128),
                          nn.ReLU(), nn.Linear(128, 1)).eval()
    fwd = ScalarForward(model, RegressionTarget())
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(13)) * 0.05
    base = torch.zeros_like(x)
    ref = integrated_gradients(fwd, x, base, None, 2047, "nested", _policy(256)).attributions

    def errors(res) -> torch.Tensor:  # noqa: ANN001
        return (res.attributions - ref).norm(dim=1) / ref.norm(dim=1)

    default = integrated_gradients(fwd, x, base, None, None, "nested", _policy(256))
    assert float(errors(default).max()) <= 0.02 and float((default.delta.abs() / default.gap.abs()).max()) <= 0.01
    monkeypatch.setattr(integrated, "FAST_RATIO", 0.25)  # the former threshold
    former = integrated_gradients(fwd, x, base, None, None, "nested", _policy(256))
    assert float(errors(former)[0]) > 0.03 and int(former.steps[0]) == 7, (errors(former), former.steps)
    assert int(default.steps[0]) > 7 and default.evaluations > former.evaluations


def test_a_path_with_a_constant_gradient_stops_at_3_points() -> None:
    """A bias-free ReLU CNN is positively homogeneous: from a zero baseline its gradient is the same all along the
    path, so the 3-point level equals the 1-point level and the exact IG. Every sample stops there (3 evaluations,
    where a first level of 7 points spent 7), equal to Captum's IG; a smooth network's map moves between 1 and 3
    points, and no sample of it stops at 3."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 1, bias=False)).eval()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    base = torch.zeros_like(x)
    res = integrated_gradients(ScalarForward(model, RegressionTarget()), x, base, None, None, "nested", _policy(64))
    assert res.steps.tolist() == [3] * 6 and res.evaluations == 18 and bool(res.converged.all())
    captum = CaptumIG(lambda p: model(p)[:, 0]).attribute(x, base, n_steps=50)
    torch.testing.assert_close(res.attributions, captum, rtol=1e-4, atol=1e-7)
    smooth = integrated_gradients(ScalarForward(_tanh_mlp(), RegressionTarget()), x.flatten(1)[:, :8],
                                  torch.zeros(6, 8), None, None, "nested", _policy(64))
    assert bool((smooth.steps >= 7).all()), smooth.steps
