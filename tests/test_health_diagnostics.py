"""Health diagnostics (predictions, gradients, activations, failure_modes) against numpy, and failure isolation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cerebro.diagnostics.predictions import Predictions
from cerebro.errors import AutopsyFailure
from tests.autopsy_helpers import autopsy, load_array, load_summary
from tests.models import PassThrough as Lookup


def _mlp(seed: int = 0, d: int = 5) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1))


class WithLoss(nn.Module):
    def __init__(self, loss_fn: nn.Module) -> None:
        super().__init__()
        self.net = _mlp()
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _data(n: int = 40, d: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, 1, generator=g)


# ---------------------------------------------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------------------------------------------


def _np_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rmse = np.sqrt(np.mean((p - y) ** 2))
    return {"rmse": rmse, "nrmse": rmse / np.std(y), "mae": np.mean(np.abs(p - y)),
            "r2": 1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2)}


def test_predictions_regression_metrics_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 0.5, size=30)
    p = y + rng.normal(0.1, 0.2, size=30)
    x = torch.tensor(p, dtype=torch.float32).unsqueeze(1)
    yt = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    summary = autopsy(Lookup(), (x, yt), tmp_path, ["predictions"], loader_batch_size=7)
    rec = summary["diagnostics"]["predictions"]
    assert rec["status"] == "ok"
    m = rec["metrics"]
    p32, y32 = x[:, 0].double().numpy(), yt[:, 0].double().numpy()  # the float32 values the model saw
    ref = _np_metrics(p32, y32)
    # float64 on both sides from the same float32 values (PassThrough model): only the summation order differs
    # (~1e-16), so 1e-9 holds on any CPU
    for key in ("rmse", "nrmse", "mae", "r2"):
        assert m[key] == pytest.approx(ref[key], rel=1e-9), key
    assert m["pearson_r"] == pytest.approx(np.corrcoef(p32, y32)[0, 1], rel=1e-9)
    assert m["n"] == 30
    assert m["prediction_std"] == pytest.approx(np.std(p32), rel=1e-6)
    # naive predictors
    mean_ref = _np_metrics(np.full(30, y32.mean()), y32)
    med_ref = _np_metrics(np.full(30, np.median(y32)), y32)
    assert m["mean_predictor_rmse"] == pytest.approx(np.std(y32), rel=1e-9)
    assert m["mean_predictor_nrmse"] == pytest.approx(1.0, rel=1e-9)
    assert m["mean_predictor_r2"] == pytest.approx(0.0, abs=1e-9)
    assert m["mean_predictor_mae"] == pytest.approx(mean_ref["mae"], rel=1e-9)
    for key in ("rmse", "nrmse", "mae", "r2"):
        assert m[f"median_predictor_{key}"] == pytest.approx(med_ref[key], rel=1e-9, abs=1e-12), key
    assert rec["flags"] == []
    # equal by construction: PassThrough returns its input, and the labels are copied
    np.testing.assert_array_equal(load_array(tmp_path, "predictions", "predictions"), x[:, 0].numpy())
    np.testing.assert_array_equal(load_array(tmp_path, "predictions", "targets"), yt[:, 0].numpy())


def test_predictions_flags_worse_than_mean_and_constant(tmp_path):
    y = torch.linspace(0, 1, 20).unsqueeze(1)
    bad = autopsy(Lookup(), (1.0 - y, y), tmp_path / "bad", ["predictions"])
    assert bad["diagnostics"]["predictions"]["flags"] == ["no better than predicting the mean: rmse >= mean-predictor rmse"]
    assert bad["diagnostics"]["predictions"]["metrics"]["pearson_r"] == pytest.approx(-1.0)
    const = autopsy(Lookup(), (torch.full((20, 1), 0.5), y), tmp_path / "const", ["predictions"])
    rec = const["diagnostics"]["predictions"]
    assert rec["flags"] == ["constant predictions: the model outputs the same value for every sample"]
    assert rec["metrics"]["pearson_r"] is None and rec["metrics"]["prediction_std"] == 0.0


def test_predictions_without_labels(tmp_path):
    x = torch.tensor([[1.0], [2.0], [4.0], [5.0]])
    rec = autopsy(Lookup(), (x,), tmp_path, ["predictions"])["diagnostics"]["predictions"]
    assert rec["status"] == "ok"
    assert rec["flags"] == ["no labels in the batches: prediction quality not measured"]
    assert rec["metrics"] == {"n": 4, "prediction_mean": 3.0, "prediction_std": pytest.approx(np.std([1, 2, 4, 5]))}


def test_predictions_classification_accuracy_and_confusion(tmp_path):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(50, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=50)
    y[:25] = logits[:25].argmax(1)  # half right by construction
    summary = autopsy(Lookup(), (torch.from_numpy(logits), torch.from_numpy(y)), tmp_path, ["predictions"],
                      target="classification")
    rec = summary["diagnostics"]["predictions"]
    assert rec["status"] == "ok"
    pred = logits.argmax(1)
    cm = np.zeros((3, 3), dtype=np.int64)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    np.testing.assert_array_equal(load_array(tmp_path, "predictions", "confusion_matrix"), cm)
    m = rec["metrics"]
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    counts = np.bincount(y, minlength=3)
    assert m["majority_class_accuracy"] == pytest.approx(counts.max() / 50)
    assert m["per_class_accuracy"] == pytest.approx([cm[i, i] / counts[i] for i in range(3)])
    np.testing.assert_array_equal(load_array(tmp_path, "predictions", "predictions"), pred)
    np.testing.assert_array_equal(load_array(tmp_path, "predictions", "targets"), y)


def test_predictions_classifier_at_or_below_majority_is_flagged(tmp_path):
    # 8 samples, 5 of class 0: always-0 would score 5/8; this model gets 4/8 right without being constant.
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 1, 0, 2])
    logits = nn.functional.one_hot(pred, 3).float()
    rec = autopsy(Lookup(), (logits, y), tmp_path / "low", ["predictions"],
                  target="classification")["diagnostics"]["predictions"]
    assert rec["metrics"]["accuracy"] == pytest.approx(0.5)
    assert rec["metrics"]["majority_class_accuracy"] == pytest.approx(5 / 8)
    assert rec["flags"] == ["below the majority-class baseline: accuracy 0.500 vs 0.625 for always predicting the "
                            "majority class (class 0)"]
    better = autopsy(Lookup(), (nn.functional.one_hot(y, 3).float(), y), tmp_path / "high", ["predictions"],
                     target="classification")["diagnostics"]["predictions"]
    assert better["metrics"]["accuracy"] == 1.0 and better["flags"] == []


def test_predictions_classification_constant_flag(tmp_path):
    logits = torch.tensor([[0.0, 5.0, 1.0]]).repeat(6, 1)
    rec = autopsy(Lookup(), (logits, torch.tensor([0, 1, 2, 1, 0, 1])), tmp_path, ["predictions"],
                  target="classification")["diagnostics"]["predictions"]
    # always the majority class: constant, and exactly at (not below) the majority-class baseline
    assert rec["flags"] == ["constant predictions: every sample predicted as class 1",
                            "no better than the majority-class baseline: accuracy 0.500 vs 0.500 for always "
                            "predicting the majority class (class 1)"]
    assert rec["metrics"]["accuracy"] == pytest.approx(0.5)
    assert rec["metrics"]["per_class_accuracy"] == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------------------------


def _hand_grad_norms(model: nn.Module, loss_of_output) -> tuple[dict[str, float], float]:  # noqa: ANN001
    work = copy.deepcopy(model).eval()
    loss = loss_of_output(work)
    loss.backward()
    return {n: float(p.grad.norm()) for n, p in work.named_parameters()}, float(loss.detach())


@pytest.mark.parametrize("batch_size", [3, 100])
def test_gradients_default_regression_loss_matches_full_batch_mse(tmp_path, batch_size):
    model = _mlp()
    x, y = _data()
    expected, loss = _hand_grad_norms(model, lambda m: nn.functional.mse_loss(m(x), y))
    summary = autopsy(model, (x, y), tmp_path, ["gradients"], batch_size=batch_size)
    rec = summary["diagnostics"]["gradients"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert m["loss_source"] == "default_regression"
    assert m["loss"] == pytest.approx(loss, rel=1e-5)
    assert list(m["per_parameter"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for name, g in expected.items():
        assert m["per_parameter"][name]["grad_norm"] == pytest.approx(g, rel=1e-5, abs=1e-7), name
        w = float(dict(model.named_parameters())[name].detach().norm())
        assert m["per_parameter"][name]["param_norm"] == pytest.approx(w, rel=1e-6)
        assert m["per_parameter"][name]["ratio"] == pytest.approx(g / w, rel=1e-5)
    norms = load_array(tmp_path, "gradients", "grad_norms")
    np.testing.assert_allclose(norms, list(expected.values()), rtol=1e-5, atol=1e-7)
    assert m["total_grad_norm"] == pytest.approx(float(np.sqrt(np.sum(norms ** 2))), rel=1e-6)
    assert m["frozen_parameters"] == 0
    assert rec["flags"] == []
    # the caller's module is untouched: no gradients left on it
    assert all(p.grad is None for p in model.parameters())


def test_gradients_module_loss_fn_is_used(tmp_path):
    model = WithLoss(nn.L1Loss())
    x, y = _data()
    expected, loss = _hand_grad_norms(model, lambda m: nn.functional.l1_loss(m(x), y))
    mse_expected, _ = _hand_grad_norms(model, lambda m: nn.functional.mse_loss(m(x), y))
    rec = autopsy(model, (x, y), tmp_path, ["gradients"], batch_size=8)["diagnostics"]["gradients"]
    assert rec["metrics"]["loss_source"] == "module.loss_fn"
    assert rec["metrics"]["loss"] == pytest.approx(loss, rel=1e-5)
    got = {n: d["grad_norm"] for n, d in rec["metrics"]["per_parameter"].items()}
    for name, g in expected.items():
        assert got[name] == pytest.approx(g, rel=1e-5), name
    assert got["net.0.weight"] != pytest.approx(mse_expected["net.0.weight"], rel=1e-3)


def test_gradients_sum_reduced_module_loss_does_not_depend_on_batch_size(tmp_path):
    model = WithLoss(nn.MSELoss(reduction="sum"))
    x, y = _data()
    expected, loss = _hand_grad_norms(model, lambda m: nn.functional.mse_loss(m(x), y, reduction="sum"))
    small = autopsy(model, (x, y), tmp_path / "3", ["gradients"], batch_size=3)["diagnostics"]["gradients"]["metrics"]
    whole = autopsy(model, (x, y), tmp_path / "40", ["gradients"], batch_size=40)["diagnostics"]["gradients"]["metrics"]
    assert whole["loss"] == pytest.approx(loss, rel=1e-5)  # one chunk: the module's own loss, exactly
    assert small["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for name in expected:
        assert small["per_parameter"][name]["grad_norm"] == pytest.approx(whole["per_parameter"][name]["grad_norm"],
                                                                          rel=1e-5), name


def test_gradients_unusable_module_loss_falls_back_with_flag(tmp_path):
    class Broken(nn.Module):
        def forward(self, out, y):  # noqa: ANN001, ANN201
            raise ValueError("shapes disagree")

    model = WithLoss(Broken())
    x, y = _data()
    rec = autopsy(model, (x, y), tmp_path, ["gradients"])["diagnostics"]["gradients"]
    assert rec["status"] == "ok"
    assert rec["metrics"]["loss_source"] == "default_regression"
    assert rec["flags"] == ["module loss `loss_fn` unusable (shapes disagree); used the default loss"]


def test_gradients_loss_module_without_loss_fails(tmp_path):
    x, y = _data()
    with pytest.warns(UserWarning, match="diagnostic 'gradients' failed"):
        rec = autopsy(_mlp(), (x, y), tmp_path, [{"gradients": {"loss": "module"}}])["diagnostics"]["gradients"]
    assert rec["status"] == "failed"
    assert rec["reason"] == ("RuntimeError: loss=module but the module has no loss_fn/criterion/loss_function "
                             "attribute, or no labels")


def test_gradients_without_labels_use_target(tmp_path):
    model = _mlp()
    x, _ = _data()
    expected, total = _hand_grad_norms(model, lambda m: m(x)[:, 0].mean())
    rec = autopsy(model, (x,), tmp_path, ["gradients"], batch_size=7)["diagnostics"]["gradients"]
    assert rec["metrics"]["loss_source"] == "target"
    assert rec["metrics"]["loss"] == pytest.approx(total, rel=1e-5, abs=1e-7)
    for name, g in expected.items():
        assert rec["metrics"]["per_parameter"][name]["grad_norm"] == pytest.approx(g, rel=1e-5), name


def test_gradients_default_classification_is_cross_entropy(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, _ = _data(30)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(4))
    expected, loss = _hand_grad_norms(model, lambda m: nn.functional.cross_entropy(m(x), y))
    rec = autopsy(model, (x, y), tmp_path, ["gradients"], target="classification",
                  batch_size=4)["diagnostics"]["gradients"]
    assert rec["metrics"]["loss_source"] == "default_classification"
    assert rec["metrics"]["loss"] == pytest.approx(loss, rel=1e-5)
    for name, g in expected.items():
        assert rec["metrics"]["per_parameter"][name]["grad_norm"] == pytest.approx(g, rel=1e-5), name


def test_gradients_flags_vanishing_and_counts_frozen(tmp_path):
    model = _mlp()
    with torch.no_grad():
        model[2].weight.mul_(1e-9)  # gradients reaching layer 0 are scaled by 1e-9
    model[2].bias.requires_grad_(False)
    x, y = _data()
    rec = autopsy(model, (x, y), tmp_path, ["gradients"])["diagnostics"]["gradients"]
    m = rec["metrics"]
    assert m["frozen_parameters"] == 1
    assert list(m["per_parameter"]) == ["0.weight", "0.bias", "2.weight"]
    vanishing = [f for f in rec["flags"] if f.startswith("vanishing gradient: ")]
    assert [f.split(" (")[0] for f in vanishing] == ["vanishing gradient: 0.weight", "vanishing gradient: 0.bias"]
    assert m["per_parameter"]["0.weight"]["grad_norm"] < 1e-7 < m["per_parameter"]["2.weight"]["grad_norm"]
    # an explicit threshold above every norm flags all; exploding likewise
    rec2 = autopsy(model, (x, y), tmp_path / "2", [{"gradients": {"vanishing": 0.0, "exploding": 1e-12}}])
    flags2 = rec2["diagnostics"]["gradients"]["flags"]
    assert [f.split(" (")[0] for f in flags2] == [f"exploding gradient: {n}" for n in ("0.weight", "0.bias", "2.weight")]


# ---------------------------------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------------------------------


class Named(nn.Module):
    def __init__(self, bias: float = 0.0, gain: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(5, 8)
        with torch.no_grad():
            self.lin.weight.mul_(gain)
            self.lin.bias.fill_(bias)
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(8, 6)
        self.tanh = nn.Tanh()
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.lin(x))
        return self.head(self.tanh(self.lin2(h) * 1.0))


def test_activations_dead_relu_layer(tmp_path):
    x, y = _data()
    rec = autopsy(Named(bias=-1e6), (x, y), tmp_path, ["activations"])["diagnostics"]["activations"]
    assert rec["status"] == "ok"
    assert "dead layer: relu (100% of 8 units never active)" in rec["flags"]
    assert [f for f in rec["flags"] if f.startswith("dead layer")] == ["dead layer: relu (100% of 8 units never active)"]
    per = rec["metrics"]["per_layer"]
    assert set(per) == {"lin", "relu", "lin2", "tanh", "head"}
    assert per["relu"]["zero_fraction"] == 1.0 and per["relu"]["dead_unit_fraction"] == 1.0
    assert per["relu"]["units"] == 8
    assert per["lin"]["dead_unit_fraction"] == 0.0
    assert per["tanh"]["saturated_fraction"] is not None and per["relu"]["saturated_fraction"] is None
    np.testing.assert_allclose(load_array(tmp_path, "activations", "dead_unit_fraction"),
                               [per[n]["dead_unit_fraction"] for n in per])


def test_activations_healthy_model_has_no_flags(tmp_path):
    x, y = _data()
    rec = autopsy(Named(), (x, y), tmp_path, ["activations"])["diagnostics"]["activations"]
    assert rec["flags"] == []
    assert rec["metrics"]["layers"] == 5


def test_activations_saturated_tanh(tmp_path):
    x, y = _data()
    model = Named(gain=1e4)  # lin2 sees huge inputs through relu -> tanh pinned at +-1
    with torch.no_grad():
        model.lin2.weight.mul_(1e4)
    rec = autopsy(model, (x, y), tmp_path, ["activations"])["diagnostics"]["activations"]
    sat = [f for f in rec["flags"] if f.startswith("saturated layer")]
    assert len(sat) == 1 and sat[0].startswith("saturated layer: tanh (")
    with torch.no_grad():
        t = model.tanh(model.lin2(model.relu(model.lin(x))))
    frac = float(((t <= -0.99) | (t >= 0.99)).double().mean())
    assert frac > 0.5
    assert rec["metrics"]["per_layer"]["tanh"]["saturated_fraction"] == pytest.approx(frac)


def test_activations_watched_layer_stats_match_numpy(tmp_path):
    x, y = _data(37)
    model = Named(bias=0.1)
    rec = autopsy(model, (x, y), tmp_path, [{"activations": {"layers": ["lin2", "relu"]}}],
                  batch_size=5)["diagnostics"]["activations"]
    per = rec["metrics"]["per_layer"]
    assert list(per) == ["lin2", "relu"]
    with torch.no_grad():
        h = model.relu(model.lin(x))
        out2 = model.lin2(h).double().numpy()
    h = h.double().numpy()
    # The autopsy's float32 passes run in batches of 5, the reference in one batch of 37: matrix products may sum
    # in another order (another kernel), so each value may differ by a few float32 roundings. A mean or std
    # moves by at most that much: a few float32 epsilons of the largest value, whatever the sign of the mean.
    eps = float(np.finfo(np.float32).eps)
    for name, ref in (("lin2", out2), ("relu", h)):
        tol = 8 * eps * float(np.abs(ref).max())
        assert per[name]["mean"] == pytest.approx(ref.mean(), rel=0, abs=tol), name
        assert per[name]["std"] == pytest.approx(ref.std(), rel=0, abs=tol), name
    assert per["lin2"]["units"] == 6 and per["lin2"]["finite"] is True
    assert per["relu"]["zero_fraction"] == pytest.approx(np.mean(h == 0))
    assert per["relu"]["dead_unit_fraction"] == pytest.approx(np.mean(np.abs(h).max(axis=0) == 0))


def test_activations_unknown_layer_fails_with_candidates(tmp_path):
    x, y = _data()
    with pytest.warns(UserWarning):
        rec = autopsy(Named(), (x, y), tmp_path, [{"activations": {"layers": ["tahn"]}}])["diagnostics"]["activations"]
    assert rec["status"] == "failed"
    assert "layer 'tahn' is not a submodule of Named. Did you mean 'tanh'?" in rec["reason"]


# ---------------------------------------------------------------------------------------------------------------------
# failure_modes
# ---------------------------------------------------------------------------------------------------------------------


def test_failure_modes_regression_against_numpy(tmp_path):
    rng = np.random.default_rng(7)
    n = 48
    y = rng.uniform(0, 10, size=n).astype(np.float32)
    p = (y + rng.normal(0, 1, size=n) + 0.3).astype(np.float32)
    subject = np.repeat(np.arange(4), 12)
    rng.shuffle(subject)
    data = (torch.from_numpy(p).unsqueeze(1), torch.from_numpy(y).unsqueeze(1), torch.from_numpy(subject))
    summary = autopsy(Lookup(), data, tmp_path, [{"failure_modes": {"top_k": 5, "n_bins": 4}}], loader_batch_size=10)
    rec = summary["diagnostics"]["failure_modes"]
    assert rec["status"] == "ok", rec["reason"]
    assert summary["samples"]["metadata_fields"] == ["field_2"]
    m = rec["metrics"]
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    err = np.abs(p64 - y64)
    np.testing.assert_allclose(load_array(tmp_path, "failure_modes", "errors"), err, rtol=1e-12)  # float64 both sides
    worst = np.argsort(-err)[:5]
    assert [w["index"] for w in m["worst"]] == worst.tolist()
    assert [w["abs_error"] for w in m["worst"]] == pytest.approx(err[worst].tolist())
    assert [w["prediction"] for w in m["worst"]] == pytest.approx(p64[worst].tolist())
    assert [w["target"] for w in m["worst"]] == pytest.approx(y64[worst].tolist())
    assert [w["metadata"] for w in m["worst"]] == [{"field_2": int(subject[i])} for i in worst]
    assert m["mean_abs_error"] == pytest.approx(err.mean())
    assert m["over_prediction_fraction"] == pytest.approx(np.mean(p64 > y64))
    assert m["mean_signed_error"] == pytest.approx(np.mean(p64 - y64))
    bins = m["by_target_bin"]
    assert len(bins) == 4
    assert sum(b["n"] for b in bins) == n
    edges = np.quantile(y64, np.linspace(0, 1, 5))
    assert [b["low"] for b in bins] == pytest.approx(edges[:-1].tolist())
    assert [b["high"] for b in bins] == pytest.approx(edges[1:].tolist())
    for b in bins[:-1]:
        mask = (y64 >= b["low"]) & (y64 < b["high"])
        assert b["n"] == int(mask.sum())
        assert b["mean_abs_error"] == pytest.approx(err[mask].mean())
        assert b["mean_signed_error"] == pytest.approx((p64 - y64)[mask].mean())
    groups = m["by_group"]["field_2"]
    assert list(groups) == ["0", "1", "2", "3"]
    for s in range(4):
        assert groups[str(s)]["n"] == 12
        assert groups[str(s)]["mean_error"] == pytest.approx(err[subject == s].mean())


def test_failure_modes_flags_errors_concentrated_in_one_target_range(tmp_path):
    y = np.linspace(0, 1, 40).astype(np.float32)
    p = y.copy()
    p[-8:] += 1.0  # the top quintile of targets is badly over-predicted
    p[:32] += 0.01
    data = (torch.from_numpy(p).unsqueeze(1), torch.from_numpy(y).unsqueeze(1))
    rec = autopsy(Lookup(), data, tmp_path, ["failure_modes"])["diagnostics"]["failure_modes"]
    assert len(rec["flags"]) == 1 and rec["flags"][0].startswith("errors concentrate in targets 0.8")
    assert rec["metrics"]["over_prediction_fraction"] == 1.0


def test_failure_modes_classification_loss_and_error_rate(tmp_path):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(30, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=30)
    rec = autopsy(Lookup(), (torch.from_numpy(logits), torch.from_numpy(y)), tmp_path, [{"failure_modes": {"top_k": 3}}],
                  target="classification")["diagnostics"]["failure_modes"]
    shifted = logits - logits.max(1, keepdims=True)
    ce = -(shifted[np.arange(30), y] - np.log(np.exp(shifted).sum(1)))
    np.testing.assert_allclose(load_array(tmp_path, "failure_modes", "errors"), ce, rtol=1e-5)
    assert [w["index"] for w in rec["metrics"]["worst"]] == np.argsort(-ce)[:3].tolist()
    pred = logits.argmax(1)
    expected = {str(c): float(np.mean(pred[y == c] != c)) for c in range(3)}
    assert rec["metrics"]["error_rate_by_class"] == pytest.approx(expected)


def test_failure_modes_skipped_without_labels(tmp_path):
    with pytest.warns(UserWarning, match="failure_modes needs labels"):
        summary = autopsy(Lookup(), (torch.randn(6, 1),), tmp_path, ["predictions", "failure_modes"])
    rec = summary["diagnostics"]["failure_modes"]
    assert rec["status"] == "skipped"
    assert rec["reason"] == "failure_modes needs labels, but the batches carry none"
    assert summary["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------------------
# isolation of failures
# ---------------------------------------------------------------------------------------------------------------------


def test_one_failing_diagnostic_does_not_stop_the_others(tmp_path):
    x, y = _data(12)
    # A baseline file that exists (options are valid) but does not fit the samples: IG fails while it runs.
    wrong = tmp_path / "baseline.npy"
    np.save(wrong, np.zeros(3, dtype=np.float32))
    diags = ["predictions", {"integrated_gradients": {"baseline": str(wrong)}}, "gradients", "failure_modes"]
    with pytest.warns(UserWarning, match="diagnostic 'integrated_gradients' failed"):
        summary = autopsy(_mlp(), (x, y), tmp_path / "out", diags)
    recs = summary["diagnostics"]
    assert list(recs) == ["predictions", "integrated_gradients", "gradients", "failure_modes"]
    ig = recs["integrated_gradients"]
    assert ig["status"] == "failed"
    assert ig["reason"].startswith(f"CerebroConfigError: baseline file {str(wrong)!r} has shape (3,); expected")
    assert ig["artifacts"] == ["integrated_gradients.traceback.txt"]
    assert "Traceback" in (tmp_path / "out" / "integrated_gradients.traceback.txt").read_text()
    for name in ("predictions", "gradients", "failure_modes"):
        assert recs[name]["status"] == "ok" and recs[name]["reason"] is None
        assert recs[name]["metrics"]
    assert summary["status"] == "partial"
    assert summary["reason"] == "failed diagnostics: ['integrated_gradients']"
    assert load_summary(tmp_path / "out")["diagnostics"]["gradients"]["metrics"]["loss_source"] == "default_regression"


def test_injected_fault_is_recorded_and_others_run(tmp_path, monkeypatch):
    def boom(self, ctx, out):  # noqa: ANN001, ANN202
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Predictions, "run", boom)
    x, y = _data(8)
    with pytest.warns(UserWarning, match="injected fault"):
        summary = autopsy(_mlp(), (x, y), tmp_path / "lenient", ["predictions", "gradients"])
    assert summary["diagnostics"]["predictions"]["status"] == "failed"
    assert summary["diagnostics"]["predictions"]["reason"] == "RuntimeError: injected fault"
    assert summary["diagnostics"]["gradients"]["status"] == "ok"
    assert summary["status"] == "partial"


def test_strict_mode_stops_at_first_failure_and_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(Predictions, "run", lambda self, ctx, out: (_ for _ in ()).throw(RuntimeError("injected fault")))
    x, y = _data(8)
    with pytest.warns(UserWarning, match="injected fault"), pytest.raises(AutopsyFailure) as info:
        autopsy(_mlp(), (x, y), tmp_path, ["predictions", "gradients"], fail_on_error=True)
    assert "predictions" in str(info.value) and str(tmp_path) in str(info.value)
    strict = load_summary(tmp_path)
    assert strict["diagnostics"]["predictions"]["reason"] == "RuntimeError: injected fault"
    # Regression test: at commit 941c56a the runner dropped the remaining diagnostics without a record and
    # summary.json claimed "every diagnostic failed: ['predictions']" although gradients never ran.
    assert strict["diagnostics"]["gradients"]["status"] == "skipped"
    assert strict["diagnostics"]["gradients"]["reason"] == "not run: strict mode stopped after 'predictions' failed"
    assert strict["diagnostics"]["gradients"]["metrics"] == {}
    assert strict["status"] == "partial"
    assert strict["reason"] == "failed diagnostics: ['predictions']"


def test_module_loss_gets_labels_in_the_output_shape(tmp_path):
    """(B, 1) outputs with (B,) labels: MSELoss would broadcast to (B, B); the autopsy reshapes the labels first."""
    model = WithLoss(nn.MSELoss())
    x, y = _data()
    y_flat = y.reshape(-1)
    expected, loss = _hand_grad_norms(model, lambda m: nn.functional.mse_loss(m(x), y_flat.reshape(-1, 1)))
    metrics = autopsy(model, (x, y_flat), tmp_path, ["gradients"], batch_size=7)["diagnostics"]["gradients"]["metrics"]
    assert metrics["loss_source"] == "module.loss_fn"
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    for name, norm in expected.items():
        assert metrics["per_parameter"][name]["grad_norm"] == pytest.approx(norm, rel=1e-4)


def test_activations_come_from_the_shared_forward_pass(tmp_path, monkeypatch):
    """With the runner, activations hook the one shared forward pass: the model runs no extra pass for them."""
    model = _mlp()
    x, y = _data()
    calls = {"n": 0}
    real = nn.Sequential.forward

    def counting(self, inp):  # noqa: ANN001, ANN202
        calls["n"] += 1
        return real(self, inp)

    monkeypatch.setattr(nn.Sequential, "forward", counting)
    summary = autopsy(model, (x, y), tmp_path / "a", ["predictions"], batch_size=10)
    base = calls["n"]
    calls["n"] = 0
    summary = autopsy(model, (x, y), tmp_path / "b", ["predictions", "activations"], batch_size=10)
    rec = summary["diagnostics"]["activations"]
    assert rec["status"] == "ok" and rec["metrics"]["shared_pass"] is True
    assert calls["n"] == base  # no forward pass beyond the shared one (and the preflight probe)
    with torch.no_grad():
        h = model[1](model[0](x))
    layer = rec["metrics"]["per_layer"]["1"]
    # batches of 10 vs one of 40: other float32 kernels, a few roundings per value; the tanh mean may cancel, so the
    # tolerance is a few float32 epsilons of the largest |value| (as in test_activations_watched_layer_stats...)
    tol = 8 * float(torch.finfo(torch.float32).eps) * float(h.abs().max())
    assert layer["mean"] == pytest.approx(float(h.double().mean()), rel=0, abs=tol)
    assert layer["std"] == pytest.approx(float(h.double().std(unbiased=False)), rel=0, abs=tol)


def test_a_layer_that_cannot_be_summarised_is_named_and_the_others_still_run(tmp_path, monkeypatch):
    """A statistics failure on one call site no longer fails the whole activations diagnostic (issue 10, item 6):
    the layer is named with its reason and flagged, and every other diagnostic runs."""
    from cerebro.diagnostics import activations as act

    real = act._Stats.update
    calls = {"n": 0}

    def broken_once(self, t, sat):  # noqa: ANN001, ANN202 - the first layer's statistics fail, the rest work
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("hook exploded")
        return real(self, t, sat)

    monkeypatch.setattr(act._Stats, "update", broken_once)
    summary = autopsy(_mlp(), _data(), tmp_path, ["predictions", "activations", "failure_modes"])
    d = summary["diagnostics"]
    rec = d["activations"]
    assert rec["status"] == "ok"
    bad = rec["metrics"]["layers_not_summarised"]
    assert len(bad) == 1 and "hook exploded" in str(bad)
    assert any("hook exploded" in f or "not summarised" in f for f in rec["flags"]), rec["flags"]
    assert rec["metrics"]["per_layer"], "the other layers are still summarised"
    assert d["predictions"]["status"] == d["failure_modes"]["status"] == "ok"


def test_gradients_on_a_fully_frozen_model_is_skipped_with_the_reason(tmp_path):
    model = _mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    summary = autopsy(model, _data(), tmp_path, ["predictions", "gradients"])
    rec = summary["diagnostics"]["gradients"]
    assert rec["status"] == "skipped" and "no trainable parameters (4 frozen" in rec["reason"]
    assert summary["status"] == "ok" and rec["artifacts"] == []
