"""One majority-class baseline check for every classifier, constant or not (issue 21, item 3): the ``predictions``
flag and the model-quality finding come from the same judgement and name the accuracy, the majority-class accuracy
and the majority class; a constant classifier below the baseline is flagged both constant and below it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cerebro.report.evidence import baseline_flag, majority_baseline
from tests.autopsy_helpers import autopsy
from tests.findings_checks import contradictions
from tests.models import PassThrough as Lookup

# 6 samples of classes 1, 1, 1, 2, 2, 0: the majority class is 1, always predicting it scores 3/6.
LABELS = torch.tensor([1, 1, 1, 2, 2, 0])
BELOW = "below the majority-class baseline"
AT = "no better than the majority-class baseline"

CASES = {  # predicted classes -> (flags, model-quality severity, words of its text)
    "constant_and_below": ([0] * 6, ["constant predictions: every sample predicted as class 0",
                                     f"{BELOW}: accuracy 0.167 vs 0.500 for always predicting the majority class "
                                     "(class 1)"],
                           "problem", ["below the majority-class baseline: accuracy 17% vs 50%", "(class 1)",
                                       "It predicts class 0 for every sample (constant predictions)."]),
    "non_constant_below": ([1, 0, 2, 0, 0, 0], [f"{BELOW}: accuracy 0.333 vs 0.500 for always predicting the "
                                                "majority class (class 1)"],
                           "problem", ["below the majority-class baseline: accuracy 33% vs 50%", "(class 1)"]),
    "constant_at_majority": ([1] * 6, ["constant predictions: every sample predicted as class 1",
                                       f"{AT}: accuracy 0.500 vs 0.500 for always predicting the majority class "
                                       "(class 1)"],
                             "problem", ["no better than always predicting the majority class (class 1): accuracy "
                                         "50% vs 50%", "It predicts class 1 for every sample"]),
    "above": ([1, 1, 1, 2, 2, 1], [], "info", ["beats always predicting the majority class (class 1): accuracy 83% "
                                               "vs 50%"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_baseline_flag_and_finding_for_constant_and_other_classifiers(case: str, tmp_path) -> None:
    pred, flags, severity, words = CASES[case]
    logits = nn.functional.one_hot(torch.tensor(pred), 3).float()
    summary = autopsy(Lookup(), (logits, LABELS), tmp_path, ["predictions"], target="classification")
    rec = summary["diagnostics"]["predictions"]
    assert rec["flags"] == flags
    m = rec["metrics"]
    assert m["majority_class"] == 1 and m["majority_class_accuracy"] == 0.5  # 3 / 6 is exact in binary64
    assert m["constant_class"] == (pred[0] if case.startswith("constant") else None)
    (q,) = [f for f in summary["findings"] if f["kind"] == "model_quality"]
    assert q["severity"] == severity and all(w in q["text"] for w in words), q["text"]
    assert q["evidence"]["baseline"] == {"constant_and_below": "below", "non_constant_below": "below",
                                         "constant_at_majority": "at", "above": "above"}[case]
    # the finding states the flags: none of them comes back as a second, separate finding
    assert not [f for f in summary["findings"] if f["diagnostic"] == "predictions" and f["kind"] != "model_quality"]
    assert (BELOW in q["text"]) == case.endswith("below")
    assert contradictions(summary["findings"]) == []


def test_baseline_verdicts_and_flag_text() -> None:
    assert [majority_baseline(a, 0.5) for a in (0.25, 0.5, 0.52, 0.8)] == ["below", "at", "barely", "above"]
    assert baseline_flag(0.8, 0.5, 2) is None and baseline_flag(0.52, 0.5, 2) is None
    assert baseline_flag(0.25, 0.5, 2) == (f"{BELOW}: accuracy 0.250 vs 0.500 for always predicting the majority "
                                           "class (class 2)")
