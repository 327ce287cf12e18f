"""Target adapters: parsing (build_target), preflight errors, ScalarForward, and how run_autopsy records mismatches."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cerebro.errors import CerebroConfigError
from cerebro.targets import ClassificationTarget, RegressionTarget, ScalarForward, build_target
from tests.autopsy_helpers import autopsy, load_array
from tests.models import PassThrough as Fixed


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        return self.lin(x), {"aux": x}


# ---------------------------------------------------------------------------------------------------------------------
# build_target
# ---------------------------------------------------------------------------------------------------------------------


def test_build_target_from_strings():
    reg = build_target("regression")
    assert isinstance(reg, RegressionTarget) and reg.index is None
    assert reg.describe() == {"kind": "regression", "index": None}
    cls = build_target("classification")
    assert isinstance(cls, ClassificationTarget)
    assert cls.describe() == {"kind": "classification", "class": "predicted", "score": "logit"}


def test_build_target_from_dict_and_dictconfig():
    reg = build_target({"kind": "regression", "index": 2})
    assert isinstance(reg, RegressionTarget) and reg.index == 2
    cls = build_target({"kind": "classification", "class": "label", "score": "log_probability"})
    assert (cls.class_, cls.score) == ("label", "log_probability")
    cfg = OmegaConf.create({"kind": "classification", "class": 3, "score": "probability"})
    from_cfg = build_target(cfg)
    assert isinstance(from_cfg, ClassificationTarget)
    assert from_cfg.describe() == {"kind": "classification", "class": 3, "score": "probability"}
    assert build_target(OmegaConf.create({"kind": "regression", "index": 0})).index == 0
    # an adapter instance passes through unchanged
    inst = RegressionTarget(index=1)
    assert build_target(inst) is inst


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("regresion", r"`target.kind` can be one of \['regression', 'classification', 'similarity', 'norm'\], got 'regresion'\. "
                      r"Did you mean 'regression'\?"),
        ({"index": 0}, r"`target.kind` can be one of .*got None"),
        ({"kind": "regression", "idx": 1}, r"`target option for regression` can be one of \['index'\], got 'idx'"),
        ({"kind": "classification", "index": 1}, r"`target option for classification` can be one of "
                                                 r"\['class', 'score'\], got 'index'"),
        ({"kind": "regression", "index": -1}, r"`target.index` must be a non-negative int, got -1"),
        ({"kind": "regression", "index": True}, r"`target.index` must be a non-negative int, got True"),
        ({"kind": "regression", "index": "0"}, r"`target.index` must be a non-negative int, got '0'"),
        ({"kind": "classification", "class": "prdicted"},
         r"`target.class` can be one of \['predicted', 'label', '<int>'\], got 'prdicted'\. Did you mean 'predicted'\?"),
        ({"kind": "classification", "class": True}, r"`target.class` can be one of .*got True"),
        ({"kind": "classification", "score": "probs"},
         r"`target.score` can be one of \['logit', 'probability', 'log_probability'\], got 'probs'"),
        (3, r"`target` must be a name or a mapping with `kind`, got int: 3"),
        (["regression"], r"`target` must be a name or a mapping with `kind`, got list"),
    ],
)
def test_build_target_errors(spec, pattern):
    with pytest.raises(CerebroConfigError, match=pattern):
        build_target(spec)


def test_run_autopsy_rejects_bad_target_before_running(tmp_path):
    # configuration errors are raised at once (before any data is read), not recorded
    with pytest.raises(CerebroConfigError, match="Did you mean 'classification'"):
        autopsy(Fixed(), (torch.zeros(4, 2),), tmp_path, ["predictions"], target="clasification")
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------------------------------------------------------------
# preflight
# ---------------------------------------------------------------------------------------------------------------------


def test_regression_preflight_multi_output_without_index_names_shapes_and_fix():
    with pytest.raises(CerebroConfigError) as info:
        RegressionTarget().preflight(torch.zeros(4, 3), None)
    msg = str(info.value)
    assert "(4, 3)" in msg and "3 outputs" in msg
    assert "set target: {kind: regression, index: k}" in msg and "k in [0, 3)" in msg


@pytest.mark.parametrize(("index", "shape"), [(3, (4, 3)), (7, (4, 3)), (1, (4, 1)), (1, (4,))])
def test_regression_preflight_index_out_of_range(index, shape):
    with pytest.raises(CerebroConfigError, match=re.escape(f"target index {index} is out of range for output shape {shape}")):
        RegressionTarget(index=index).preflight(torch.zeros(shape), None)


@pytest.mark.parametrize(("index", "shape"), [(None, (4,)), (None, (4, 1)), (0, (4, 1)), (2, (4, 3))])
def test_regression_preflight_accepts_valid_shapes(index, shape):
    RegressionTarget(index=index).preflight(torch.zeros(shape), torch.zeros(shape[0], 1))


def test_regression_preflight_3d_output():
    with pytest.raises(CerebroConfigError) as info:
        RegressionTarget().preflight(torch.zeros(2, 3, 4), None)
    msg = str(info.value)
    assert "expects outputs of shape (B,), (B, 1) or (B, K)" in msg
    assert "the model returned (2, 3, 4)" in msg
    assert "target: classification" in msg


def test_regression_preflight_label_shape_mismatch():
    with pytest.raises(CerebroConfigError, match=re.escape("labels of shape (4, 2) do not match regression outputs (4, 3)")):
        RegressionTarget(index=0).preflight(torch.zeros(4, 3), torch.zeros(4, 2))
    # one label per sample, or one per output, are both fine
    RegressionTarget(index=0).preflight(torch.zeros(4, 3), torch.zeros(4))
    RegressionTarget(index=0).preflight(torch.zeros(4, 3), torch.zeros(4, 3))


def test_classification_preflight_single_logit():
    with pytest.raises(CerebroConfigError) as info:
        ClassificationTarget().preflight(torch.zeros(4, 1), None)
    msg = str(info.value)
    assert "logits of shape (B, K) with K >= 2" in msg and "returned (4, 1)" in msg
    assert "use target: regression" in msg


def test_classification_preflight_label_class_with_float_labels():
    with pytest.raises(CerebroConfigError) as info:
        ClassificationTarget(class_="label").preflight(torch.zeros(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]))
    msg = str(info.value)
    assert "needs integer class labels" in msg and "torch.float32" in msg and "(4,)" in msg
    assert "cast them to long" in msg


def test_classification_preflight_label_class_without_labels():
    with pytest.raises(CerebroConfigError, match="target class 'label' needs labels"):
        ClassificationTarget(class_="label").preflight(torch.zeros(4, 3), None)


def test_classification_preflight_labels_out_of_range():
    with pytest.raises(CerebroConfigError) as info:
        ClassificationTarget().preflight(torch.zeros(4, 3), torch.tensor([0, 1, 3, 2]))
    msg = str(info.value)
    assert "values in [0, 3]" in msg and "do not match 3 classes" in msg and "(4, 3)" in msg
    with pytest.raises(CerebroConfigError, match=re.escape("values in [-1, 2]")):
        ClassificationTarget().preflight(torch.zeros(4, 3), torch.tensor([0, -1, 2, 2]))


def test_classification_preflight_int_class_out_of_range():
    with pytest.raises(CerebroConfigError, match="target class 5 is out of range for 3 classes"):
        ClassificationTarget(class_=5).preflight(torch.zeros(4, 3), None)
    ClassificationTarget(class_=2).preflight(torch.zeros(4, 3), torch.tensor([0, 1, 2, 2]))


@pytest.mark.parametrize("target", [RegressionTarget(), ClassificationTarget()])
def test_preflight_rejects_tuple_output(target):
    with pytest.raises(CerebroConfigError) as info:
        target.preflight((torch.zeros(4, 3), torch.zeros(4)), None)
    msg = str(info.value)
    assert "the model returned tuple" in msg and "forward to return one tensor" in msg


# ---------------------------------------------------------------------------------------------------------------------
# ScalarForward
# ---------------------------------------------------------------------------------------------------------------------


def test_scalar_forward_regression_shapes():
    x = torch.arange(12.0).reshape(4, 3)
    one_d = ScalarForward(Fixed(), RegressionTarget())(x[:, 0])
    assert one_d.shape == (4,)
    torch.testing.assert_close(one_d, x[:, 0])
    col = ScalarForward(Fixed(), RegressionTarget())(x[:, :1])
    assert col.shape == (4,)
    torch.testing.assert_close(col, x[:, 0])
    picked = ScalarForward(Fixed(), RegressionTarget(index=2))(x)
    assert picked.shape == (4,)
    torch.testing.assert_close(picked, x[:, 2])


def test_scalar_forward_classification_gathers_per_sample_logit():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.5, 0.2], [-0.4, -0.3, 1.7], [0.0, 0.9, 0.8]])
    index = torch.tensor([2, 0, 1, 1])
    fwd = ScalarForward(Fixed(), ClassificationTarget(class_="label"))
    out = fwd(logits, index)
    assert out.shape == (4,)
    torch.testing.assert_close(out, torch.tensor([-1.0, 3.0, -0.3, 0.9]))
    # "predicted" without an index explains the argmax logit
    pred = ScalarForward(Fixed(), ClassificationTarget())(logits)
    torch.testing.assert_close(pred, torch.tensor([2.0, 3.0, 1.7, 0.9]))
    # a fixed class
    fixed = ScalarForward(Fixed(), ClassificationTarget(class_=1))(logits)
    torch.testing.assert_close(fixed, logits[:, 1])
    # scores
    prob = ScalarForward(Fixed(), ClassificationTarget(class_="label", score="probability"))(logits, index)
    torch.testing.assert_close(prob, logits.softmax(1)[torch.arange(4), index])
    logp = ScalarForward(Fixed(), ClassificationTarget(class_="label", score="log_probability"))(logits, index)
    torch.testing.assert_close(logp, logits.log_softmax(1)[torch.arange(4), index])


def test_per_sample_index():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.5, 0.2]])
    torch.testing.assert_close(ClassificationTarget().per_sample_index(logits, None), torch.tensor([1, 0]))
    torch.testing.assert_close(ClassificationTarget(class_="label").per_sample_index(logits, torch.tensor([[2], [1]])),
                               torch.tensor([2, 1]))
    torch.testing.assert_close(ClassificationTarget(class_=2).per_sample_index(logits, None), torch.tensor([2, 2]))
    assert RegressionTarget().per_sample_index(logits, None) is None


# ---------------------------------------------------------------------------------------------------------------------
# run_autopsy records a preflight mismatch as a failed summary and never raises
# ---------------------------------------------------------------------------------------------------------------------


def _assert_failed(summary, *fragments):
    assert summary["status"] == "failed"
    assert summary["diagnostics"] == {}
    for frag in fragments:
        assert frag in summary["reason"], (frag, summary["reason"])


def test_autopsy_records_regression_multi_output_mismatch(tmp_path):
    x = torch.randn(6, 3)
    summary = autopsy(Fixed(), (x, torch.randn(6)), tmp_path, ["predictions", "integrated_gradients"],
                      target="regression")
    _assert_failed(summary, "regression target got output shape (2, 3)", "index: k", "k in [0, 3)")
    assert summary["n_samples"] == 6
    assert summary["target"] == {"kind": "regression", "index": None}


def test_autopsy_records_classification_on_single_output(tmp_path):
    summary = autopsy(Fixed(), (torch.randn(6, 1), torch.zeros(6, dtype=torch.long)), tmp_path, ["predictions"],
                      target="classification")
    _assert_failed(summary, "logits of shape (B, K) with K >= 2", "returned (2, 1)")


def test_autopsy_records_float_labels_for_label_class(tmp_path):
    summary = autopsy(Fixed(), (torch.randn(6, 3), torch.zeros(6)), tmp_path, ["predictions"],
                      target={"kind": "classification", "class": "label"})
    _assert_failed(summary, "needs integer class labels", "cast them to long")


def test_autopsy_records_tuple_output(tmp_path):
    summary = autopsy(TupleModel(), (torch.randn(6, 3), torch.randn(6)), tmp_path, ["predictions", "gradients"])
    _assert_failed(summary, "the model returned tuple", "return one tensor")


def test_autopsy_records_index_out_of_range(tmp_path):
    summary = autopsy(Fixed(), (torch.randn(6, 3), torch.randn(6)), tmp_path, ["predictions"],
                      target={"kind": "regression", "index": 3})
    _assert_failed(summary, "target index 3 is out of range for output shape (2, 3)")


def test_autopsy_multi_output_regression_with_index_explains_that_column(tmp_path):
    x = torch.randn(6, 3)
    y = torch.randn(6, 3)
    summary = autopsy(Fixed(), (x, y), tmp_path, ["predictions"], target={"kind": "regression", "index": 1})
    assert summary["status"] == "ok"
    assert summary["target"] == {"kind": "regression", "index": 1}
    torch.testing.assert_close(torch.from_numpy(load_array(tmp_path, "predictions", "predictions")), x[:, 1])
    torch.testing.assert_close(torch.from_numpy(load_array(tmp_path, "predictions", "targets")), y[:, 1])


# Regression test: at commit 941c56a runner.execute preflighted the labels of only the first 2 samples, so a bad label
# later in the sample set ended the autopsy with "RuntimeError: index 7 is out of bounds for dimension 1 with size 3".
def test_autopsy_label_out_of_range_beyond_probe_gets_preflight_message(tmp_path):
    x = torch.randn(8, 3)
    y = torch.tensor([0, 1, 2, 0, 7, 1, 2, 0])
    summary = autopsy(Fixed(), (x, y), tmp_path, ["predictions", "failure_modes"],
                      target={"kind": "classification", "class": "label"})
    _assert_failed(summary, "values in [0, 7]", "do not match 3 classes")


def test_autopsy_label_out_of_range_beyond_probe_with_predicted_class(tmp_path):
    y = torch.tensor([0, 1, 2, 0, 1, 1, 2, 3])
    summary = autopsy(Fixed(), (torch.randn(8, 3), y), tmp_path, ["predictions"], target="classification")
    _assert_failed(summary, "values in [0, 3]", "do not match 3 classes")
