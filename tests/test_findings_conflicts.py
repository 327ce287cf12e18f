"""Findings never state a relation both ways (issue 21, item 5): each pair of findings that could conflict is built
from a synthesised summary (mean maps on disk, gallery records, sanity and faithfulness records, health flags) and
the list is checked by :func:`tests.findings_checks.contradictions`, besides the exact wording of the one verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cerebro.report.evidence import DISAGREE, OVERLAP, judge_agreement, map_agreement
from cerebro.report.findings import compute_findings, method_trust, untrusted_methods
from tests.findings_checks import contradictions

IG, GC = "integrated_gradients", "layer_gradcam"
T = 100


def _summary(**diagnostics: dict) -> dict:
    return {"status": "ok", "samples": {"input_shape": [4, T]},
            "diagnostics": {n: {"status": d.get("status", "ok"), "reason": d.get("reason"),
                                "metrics": d.get("metrics", {}), "flags": d.get("flags", []),
                                "artifacts": d.get("artifacts", [])} for n, d in diagnostics.items()}}


def _maps_on_disk(root: Path, shifts: dict[str, int], mults: dict[str, int]) -> dict:
    """Mean maps (1, T) or (4, T): a bump of 10 samples at ``shifts[n]`` over a deterministic background (a
    permutation of 0..1 by ``mults[n]``), so two of them share a peak and rank everything else differently."""
    t = np.arange(T)
    diags = {}
    for i, (n, lo) in enumerate(shifts.items()):
        m = ((t * mults[n]) % T) / T
        m[lo : lo + 10] += 5.0
        m = m[None] if i == 0 else np.tile(m, (4, 1))  # a time-only layer map against a channel x time map
        (root / "arrays" / n).mkdir(parents=True)
        np.save(root / "arrays" / n / "mean_abs_attribution.npy", m)
        diags[n] = {"artifacts": [f"arrays/{n}/mean_abs_attribution.npy"]}
    return diags


def _gallery(rhos: list[float], pair: tuple[str, str] = (IG, GC)) -> list[dict]:
    return [{"index": 10 + i, "rank": i, "agreement": [{"methods": list(pair), "spearman": r,
                                                        "disagree": r < DISAGREE}]} for i, r in enumerate(rhos)]


def _agreement(root: Path, shift_b: int, mult_b: int, rhos: list[float]) -> tuple[dict, list[dict]]:
    diags = _maps_on_disk(root, {IG: 40, GC: shift_b}, {IG: 37, GC: mult_b})
    s = _summary(**diags, failure_modes={"metrics": {"worst": [{"index": 10 + i, "abs_error": 1.0}
                                                               for i in range(len(rhos))]}})
    s["gallery"] = _gallery(rhos)
    found = compute_findings(s, root)
    assert contradictions(found) == [], found
    return s, [f for f in found if f["kind"] == "agreement"]


def test_the_demo_case_is_one_partial_agreement_not_agree_and_disagree(tmp_path) -> None:
    # the demo's report said "agree (rank correlation 0.27)" and "disagree on 3 of the 3 worst samples"
    s, (f,) = _agreement(tmp_path, 43, 61, [0.05, 0.12, 0.2])
    ev = f["evidence"]
    assert ev["spearman"] == pytest.approx(0.2809, abs=1e-3) and ev["overlap"] == pytest.approx(9 / 15)
    assert ev["verdict"] == "partly agree" and f["severity"] == "warning" and ev["worst_split"] == [10, 11, 12]
    assert f["text"].startswith(f"{IG} and {GC} partly agree on where the evidence is: time windows ")
    assert "overlap 60%; but rank correlation of the mean maps 0.28 and rank correlation on the 3 worst samples " \
           "0.05, 0.12, 0.2 (below 0.3 on 3 of the 3: samples 10, 11, 12)." in f["text"]
    assert "Thresholds: a rank correlation agrees at 0.5 or above and disagrees below 0.3; time windows agree when " \
           "they overlap at least 30%. Compare their maps in the gallery" in f["text"]
    assert not [g for g in compute_findings(s, tmp_path) if g["kind"] == "gallery_disagreement"]


@pytest.mark.parametrize("rhos, verdict, severity", [([0.6, 0.7, 0.9], "agree", "info"),
                                                     ([0.6, 0.1, 0.9], "partly agree", "warning")])
def test_agreeing_mean_maps_with_and_without_a_split_worst_sample(tmp_path, rhos, verdict, severity) -> None:
    # the same bump and the same background: the mean maps agree; one worst sample below 0.3 makes it partial
    s, (f,) = _agreement(tmp_path, 40, 37, rhos)
    assert f["evidence"]["spearman"] == pytest.approx(1.0) and f["evidence"]["verdict"] == verdict
    assert f["severity"] == severity and f["text"].startswith(f"{IG} and {GC} {verdict} on where")
    assert ("(below 0.3 on 1 of the 3: sample 11)" in f["text"]) == (verdict == "partly agree")


def test_disagreeing_maps_are_never_said_to_agree(tmp_path) -> None:
    s, (f,) = _agreement(tmp_path, 80, 61, [0.05, 0.1, 0.2])
    assert f["evidence"]["verdict"] == "disagree" and f["severity"] == "warning"
    assert f["evidence"]["overlap"] == 0.0 and " agree " not in f["text"].split(":")[0]


def test_agreement_without_maps_on_disk_is_judged_from_the_gallery_alone() -> None:
    s = _summary(failure_modes={"metrics": {"worst": [{"index": 10, "abs_error": 1.0}]}})
    s["gallery"] = _gallery([0.1, 0.2])
    (f,) = [f for f in compute_findings(s) if f["kind"] == "agreement"]
    assert f["evidence"]["verdict"] == "disagree" and "below 0.3 on 2 of the 2: samples 10, 11" in f["text"]


def test_judgement_is_all_pieces_agreeing_all_disagreeing_or_partial() -> None:
    assert judge_agreement(0.6, OVERLAP, [(1, 0.5)])["verdict"] == "agree"
    assert judge_agreement(0.6, OVERLAP, [(1, 0.4)])["verdict"] == "partly agree"  # one sample between the two
    assert judge_agreement(0.1, OVERLAP - 0.01, [(1, 0.1)])["verdict"] == "disagree"
    assert judge_agreement(0.4, None)["verdict"] == "partly agree"  # between DISAGREE and AGREE
    assert judge_agreement(None, None)["verdict"] is None
    assert map_agreement(np.ones((2, 3)), np.ones(4)) is None


def _trust_summary(sanity: dict, faith: dict, recommended: str | None) -> dict:
    return _summary(sanity_checks={"metrics": {"methods": sanity}},
                    faithfulness={"metrics": {"methods": faith, "recommended": recommended}})


PASS = {"model_randomization": "pass", "target_randomization": "pass", "degenerate": False}


@pytest.mark.parametrize("case", ["sane_but_unfaithful", "target_fail_but_recommended", "none_faithful"])
def test_a_map_is_never_both_recommended_and_ruled_out(case: str) -> None:
    s = {"sane_but_unfaithful": _trust_summary(
            {IG: PASS, "saliency": PASS},
            {IG: {"score": 0.3, "verdict": "trust"}, "saliency": {"score": 0.0, "verdict": "do_not_read",
                                                                  "verdict_reason": "no more faithful than random"}},
            IG),
         # faithfulness reads a target-randomization failure as "care" and may recommend it; the sanity rule
         # says do not read: the recommendation moves to the best method that may be read
         "target_fail_but_recommended": _trust_summary(
            {IG: {**PASS, "target_randomization": "fail"}, "saliency": PASS},
            {IG: {"score": 0.4, "verdict": "care"}, "saliency": {"score": 0.2, "verdict": "trust"}}, IG),
         "none_faithful": _trust_summary(
            {IG: PASS}, {IG: {"score": 0.01, "verdict": "do_not_read", "verdict_reason": "random"}}, None)}[case]
    found = compute_findings(s)
    assert contradictions(found) == [], found
    (faith,) = [f for f in found if f["kind"] == "faithfulness"]
    trust = method_trust(s)
    if case == "sane_but_unfaithful":
        (passed,) = [f for f in found if f["kind"] == "sanity"]
        assert passed["text"] == (f"{IG}, saliency passed the sanity checks (maps change when the weights are "
                                  f"randomized), but faithfulness rules out saliency: read {IG} only.")
        assert faith["evidence"]["recommended"] == IG and faith["evidence"]["do_not_read"] == ["saliency"]
    elif case == "target_fail_but_recommended":
        assert trust[IG]["verdict"] == "do_not_read" and IG in untrusted_methods(s)
        assert faith["evidence"]["recommended"] == "saliency" and faith["evidence"]["passed_over"] == IG
        assert faith["text"].startswith("Read saliency's maps (faithfulness score 0.2") and \
            f"{IG} scores higher but failed the sanity checks" in faith["text"]
        assert faith["evidence"]["care"] == [] and faith["evidence"]["do_not_read"] == [IG]
    else:
        assert faith["severity"] == "problem" and "read none of them" in faith["text"]
        (passed,) = [f for f in found if f["kind"] == "sanity"]
        assert passed["text"].endswith("but faithfulness rules out integrated_gradients: read none of them.")


@pytest.mark.parametrize("grads, acts, healthy, text", [
    ([], [], True, "Healthy: no dead or saturated layers (3 layers checked); no vanishing, exploding or "
                   "non-finite gradients (2 parameter tensors checked)."),
    ([], None, True, "Healthy: no vanishing, exploding or non-finite gradients (2 parameter tensors checked); "
                     "activations not checked."),
    ([], ["dead layer: net.3 (75% of 16 units never active)"], False,
     "gradients: no vanishing, exploding or non-finite gradients (2 parameter tensors checked)."),
    (["vanishing gradient: a.weight (norm 1.0e-09)"], [], False, "activations: no dead or saturated layers "
                                                                 "(3 layers checked)."),
])
def test_health_claims_only_what_ran_clean(grads, acts, healthy, text) -> None:
    diags = {"gradients": {"flags": grads, "metrics": {"per_parameter": {"a.weight": 1, "a.bias": 1}}}}
    diags["activations"] = ({"flags": acts, "metrics": {"layers": 3}} if acts is not None else
                            {"status": "failed", "reason": "boom"})
    found = compute_findings(_summary(**diags))
    assert contradictions(found) == [], found
    (clean,) = [f for f in found if f["kind"] == "health" and f["severity"] == "info"]
    assert clean["text"] == text and clean["text"].startswith("Healthy") == healthy


def test_not_converged_and_passed_sanity_checks_are_both_scoped() -> None:
    # IG's own per-sample check flags 3 samples; the sanity checks' completeness (median sample) passes
    s = _summary(integrated_gradients={"flags": ["IG not converged on 3/8 samples (|delta| > 1% of |f(x) - "
                                                 "f(baseline)|): raise n_steps or use auto"]},
                 sanity_checks={"metrics": {"methods": {IG: {**PASS, "completeness": "pass"}}}})
    found = compute_findings(s)
    assert contradictions(found) == [], found
    converged = [f["text"] for f in found if "converged" in f["text"]]
    assert converged == [f"{IG}: IG not converged on 3/8 samples (|delta| > 1% of |f(x) - f(baseline)|): raise "
                         "n_steps or use auto."]


@pytest.mark.parametrize("metrics, flags, severity, text", [
    ({"rmse": 1.0, "mean_predictor_rmse": 1.0 + 1e-12, "constant_predictions": True},
     ["constant predictions: the model outputs the same value for every sample"], "problem",
     "no better than always predicting the mean"),
    ({"accuracy": 0.52, "majority_class_accuracy": 0.5, "majority_class": 0}, [], "warning",
     "barely beats always predicting the majority class (class 0): accuracy 52% vs 50% (less than 5% above)."),
    # a summary written before the new wording: the old flag is stated by the finding, not repeated
    ({"accuracy": 0.4, "majority_class_accuracy": 0.5}, ["no better than predicting the majority class: accuracy "
                                                         "0.400 <= majority-class accuracy 0.500 (class 1)"],
     "problem", "below the majority-class baseline: accuracy 40% vs 50% for always predicting the majority class."),
])
def test_model_quality_is_one_finding_that_never_beats_and_fails(metrics, flags, severity, text) -> None:
    found = compute_findings(_summary(predictions={"metrics": metrics, "flags": flags}))
    assert contradictions(found) == [], found
    (q,) = found
    assert q["kind"] == "model_quality" and q["severity"] == severity and text in q["text"], q["text"]
    assert ("constant predictions" in q["text"]) == bool(metrics.get("constant_predictions"))


def test_the_checker_catches_what_the_old_rules_said() -> None:
    old = [{"kind": "agreement", "severity": "info", "diagnostic": None, "evidence": {"methods": [IG, GC]},
            "text": f"{IG} and {GC} agree on where the evidence is (rank correlation of the mean maps 0.27)."},
           {"kind": "gallery_disagreement", "severity": "warning", "diagnostic": "failure_modes", "evidence": {},
            "text": f"Methods disagree on 3 of the 3 worst samples (1, 2, 3: {IG} and {GC}, rank correlation below "
                    "0.3): compare their maps in the gallery before trusting either."},
           {"kind": "health", "severity": "info", "diagnostic": "gradients", "evidence": {},
            "text": "Healthy: no dead or saturated layers, no vanishing, exploding or non-finite gradients."},
           {"kind": "health", "severity": "warning", "diagnostic": "activations", "evidence": {},
            "text": "activations: dead layer: net.3."}]
    assert contradictions(old) == [f"{IG} and {GC} said to agree and disagree", "healthy and flagged",
                                   "'no dead or saturated layers' next to a flag"]


def test_agreeing_with_a_map_faithfulness_rules_out_vouches_for_nothing(tmp_path) -> None:
    diags = _maps_on_disk(tmp_path, {IG: 40, GC: 40}, {IG: 37, GC: 37})
    s = _summary(**diags, faithfulness={"metrics": {"recommended": IG, "methods": {
        IG: {"score": 0.3, "verdict": "trust"},
        GC: {"score": 0.0, "verdict": "do_not_read", "verdict_reason": "no more faithful than random order"}}}})
    found = compute_findings(s, tmp_path)
    assert contradictions(found) == [], found
    (pair,) = [f for f in found if f["kind"] == "agreement"]
    assert pair["evidence"]["verdict"] == "agree" and pair["severity"] == "info"
    assert pair["text"].endswith(f"Do not read {GC} (faithfulness: do not read (no more faithful than random "
                                 "order)): agreeing with it vouches for nothing.")
    (ev,) = [f for f in found if f["kind"] == "evidence" and f["diagnostic"] == GC]
    assert ev["severity"] == "warning" and ev["evidence"]["trusted"] is False
