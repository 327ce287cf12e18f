"""Findings (cerebro.report.findings): a planted effect's channels and time window are named, the failing group of a
metadata field is named, a method that fails its sanity checks is named and marked, and the contracts of the
faithfulness and spectral diagnostics turn into findings (and into nothing when they are absent)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import cerebro
from cerebro import run_autopsy
from cerebro.demo import PLANTED_CHANNELS, PLANTED_WINDOW, make_eeg_dataset
from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.report.findings import compute_findings, display_status, finding_key, strip_numbers
from tests.findings_checks import contradictions

NAMES = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4"]
SFREQ = 100.0


@cerebro.register_diagnostic("input_copy_explainer")
class InputCopy(AttributionDiagnostic):
    """A broken explainer (fault injection): |x|, the same whatever the model's weights."""

    def blocks(self, ctx, state, samples) -> Iterator:  # noqa: ANN001
        yield samples.start, {"attributions": ctx.x(samples).abs().cpu().numpy()}


class _Sites(Dataset):
    """Dict items with a metadata field the rules have never heard of: ``recording_site``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, site: np.ndarray) -> None:
        self.x, self.y, self.site = x, y, site

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "recording_site": int(self.site[i])}


def _planted_readout(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A linear read-out of the demo's burst (its template on the planted channels and window, zero elsewhere),
    scaled to the labels by least squares: a real model whose evidence is where the effect was planted."""
    c, t = x.shape[1:]
    lo, hi = PLANTED_WINDOW
    template = torch.zeros(c, t)
    burst = torch.sin(2 * torch.pi * 10.0 * torch.arange(lo, hi) / SFREQ) * torch.hann_window(hi - lo, periodic=False)
    template[list(PLANTED_CHANNELS), lo:hi] = burst
    feature = (x * template).sum(dim=(1, 2))
    a, b = np.polyfit(feature.numpy(), y[:, 0].numpy(), 1)
    lin = nn.Linear(c * t, 1)
    with torch.no_grad():
        lin.weight.copy_((a * template).reshape(1, -1))
        lin.bias.fill_(float(b))
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("findings")
    x, y, _ = make_eeg_dataset(48, n_chans=8, n_times=200, seed=0)
    model = _planted_readout(x, y)
    site = np.arange(48) % 3
    y = y.clone()
    y[site == 2] += 0.6  # site 2's labels are off: that group fails
    summary = run_autopsy(model, DataLoader(_Sites(x, y, site), batch_size=16), output_dir=out, max_samples=48,
                          diagnostics=["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
                                       "input_copy_explainer", {"sanity_checks": {"samples": 4}}],
                          eeg={"channel_names": NAMES, "sfreq": SFREQ})
    assert summary["status"] == "ok", summary["reason"]
    return summary, out


def _of(summary: dict, kind: str, diagnostic: str | None = None) -> list[dict]:
    return [f for f in summary["findings"] if f["kind"] == kind and (diagnostic is None or f["diagnostic"] == diagnostic)]


def test_findings_are_in_summary_json_with_the_contract_keys(planted) -> None:
    summary, out = planted
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["findings"] == summary["findings"] and len(summary["findings"]) >= 5
    for f in summary["findings"]:
        assert set(f) == {"kind", "severity", "text", "diagnostic", "evidence"}
        assert f["severity"] in ("info", "warning", "problem") and f["text"]


def test_planted_channels_and_time_window_are_named(planted) -> None:
    summary, _ = planted
    (ig,) = _of(summary, "evidence", "integrated_gradients")
    planted_names = {NAMES[c] for c in PLANTED_CHANNELS}
    assert set(ig["evidence"]["channels"]) == planted_names, ig
    assert all(name in ig["text"] for name in planted_names)
    w = ig["evidence"]["window"]
    lo, hi = (s / SFREQ for s in PLANTED_WINDOW)
    assert lo - 0.05 <= w["start_s"] < 1.0 < w["stop_s"] <= hi + 0.05, w  # inside 0.8-1.2 s, around its 1.0 s middle
    assert f"{w['start_s']:.2f}" in ig["text"] and f"{w['stop_s']:.2f} s" in ig["text"]
    assert ig["severity"] == "info" and ig["evidence"]["anchor"] == "d-integrated_gradients"


def test_failing_group_of_a_metadata_field_is_named(planted) -> None:
    summary, _ = planted
    (group,) = _of(summary, "failing_group")
    assert group["severity"] == "warning" and group["evidence"]["field"] == "recording_site"
    assert group["evidence"]["group"] == "2" and "recording_site = 2 fails" in group["text"]
    assert group["evidence"]["ratio"] > 1.5


def test_method_failing_sanity_checks_is_named_and_the_status_warns(planted) -> None:
    summary, out = planted
    problems = [f for f in _of(summary, "sanity") if f["severity"] == "problem"]
    assert [f["evidence"]["method"] for f in problems] == ["input_copy_explainer"]
    assert "do not read its maps" in problems[0]["text"]
    (passed,) = [f for f in _of(summary, "sanity") if f["severity"] == "info"]
    assert passed["evidence"]["methods"] == ["integrated_gradients"]
    assert summary["status"] == "ok" and display_status(summary) == "ok, with warnings"
    html = (out / "report.html").read_text()
    assert "cerebro autopsy: <span class='status-warn'>ok, with warnings</span>" in html
    for item in summary["gallery"]:  # marked wherever its maps appear
        assert "input_copy_explainer" in item["untrusted"] and "integrated_gradients" not in item["untrusted"]
    section = html.split("id='d-input_copy_explainer'", 1)[1].split("<h2", 1)[0]
    assert "do not read these maps" in section and "do not read:" in section


def test_model_quality_against_the_mean_predictor(planted) -> None:
    summary, _ = planted
    (q,) = _of(summary, "model_quality")
    m = summary["diagnostics"]["predictions"]["metrics"]
    assert q["evidence"]["rmse"] == m["rmse"] and q["evidence"]["mean_predictor_rmse"] == m["mean_predictor_rmse"]
    barely = m["rmse"] > 0.9 * m["mean_predictor_rmse"]  # site 2's offset labels cost this read-out a lot
    assert q["severity"] == ("warning" if barely else "info") and ("barely beats" in q["text"]) == barely
    assert f"RMSE {m['rmse']:.3g} vs {m['mean_predictor_rmse']:.3g}" in q["text"]


def _summary(**diagnostics: dict) -> dict:
    return {"status": "ok", "samples": {"input_shape": [4, 50]},
            "diagnostics": {n: {"status": "ok", "reason": None, "metrics": m.get("metrics", {}), "flags": m.get(
                "flags", []), "artifacts": []} for n, m in diagnostics.items()}}


def test_faithfulness_contract_recommends_and_warns() -> None:
    s = _summary(faithfulness={"metrics": {"recommended": "integrated_gradients", "methods": {
        "integrated_gradients": {"score": 0.31, "verdict": "trust"},
        "saliency": {"score": -0.02, "verdict": "do_not_read", "verdict_reason": "no more faithful than random"},
        "occlusion": {"score": 0.05, "verdict": "care"}}}})
    (f,) = _of({**s, "findings": compute_findings(s)}, "faithfulness")
    assert f["text"].startswith("Read integrated_gradients's maps (faithfulness score 0.31")
    assert "do not read saliency" in f["text"] and "occlusion with care" in f["text"]
    assert f["severity"] == "warning" and f["evidence"]["do_not_read"] == ["saliency"]
    absent = compute_findings(_summary(predictions={}))
    assert not [f for f in absent if f["kind"] == "faithfulness"]


def test_spectral_contract_names_the_band_and_confounds() -> None:
    s = _summary(spectral_integrated_gradients={
        "metrics": {"dominant_band": "alpha", "band_share": {"alpha": 0.62, "beta": 0.2},
                    "band_edges_hz": {"alpha": [8, 13], "beta": [13, 30]}, "peak_frequency_hz": 10.0,
                    "dominant_channel_names": ["O1", "O2"]},
        "flags": ["possible line-noise confound: 40% of |attribution| at 50 Hz (above 20%)"]})
    found = compute_findings(s)
    (band,) = [f for f in found if f["kind"] == "spectral"]
    assert "alpha band (8-13 Hz)" in band["text"] and "62%" in band["text"] and "10 Hz" in band["text"]
    (conf,) = [f for f in found if f["kind"] == "spectral_confound"]
    assert conf["severity"] == "warning" and "50 Hz" in conf["text"]
    assert not [f for f in compute_findings(_summary(predictions={})) if f["kind"].startswith("spectral")]


def test_health_and_quality_rules() -> None:
    s = _summary(predictions={"metrics": {"rmse": 1.2, "mean_predictor_rmse": 1.0, "nrmse": 1.2}},
                 gradients={"flags": ["exploding gradient: head.weight (norm 3.1e+05)"]},
                 activations={"flags": ["dead layer: net.3 (75% of 16 units never active)"]})
    found = compute_findings(s)
    assert [f["severity"] for f in found if f["kind"] == "model_quality"] == ["problem"]
    health = {f["diagnostic"]: f for f in found if f["kind"] == "health"}
    assert health["gradients"]["severity"] == "problem" and "head.weight" in health["gradients"]["text"]
    assert health["activations"]["severity"] == "warning" and "net.3" in health["activations"]["text"]
    s = _summary(predictions={"metrics": {"accuracy": 0.9, "majority_class_accuracy": 0.3}})
    (q,) = compute_findings(s)
    assert q["severity"] == "info" and "accuracy 90% vs 30%" in q["text"]


def test_numbers_are_stripped_to_match_findings() -> None:
    assert strip_numbers("IG not converged on 3/128 samples (|delta| > 5%)") == \
        strip_numbers("IG not converged on 12/128 samples (|delta| > 1e-3%)")
    a = {"kind": "failing_group", "diagnostic": "failure_modes", "text": "subject = 3 fails: mean error 0.31"}
    assert finding_key(a) == finding_key({**a, "text": "subject = 3 fails: mean error 0.42"})
    assert finding_key(a) != finding_key({**a, "text": "site = 3 fails: mean error 0.42"})


def test_the_findings_of_a_real_autopsy_never_state_a_relation_both_ways(planted) -> None:
    summary, _ = planted
    assert contradictions(summary["findings"]) == [], summary["findings"]
    (pair,) = _of(summary, "agreement")  # the mean maps and the gallery's worst samples judged together, once
    assert pair["evidence"]["methods"] == ["integrated_gradients", "input_copy_explainer"]
    assert pair["evidence"]["worst_n"] == len(summary["gallery"]) == 3
    assert "input_copy_explainer is not to be read anyway (failed sanity checks" in pair["text"]
    assert pair["severity"] == "info" and not _of(summary, "gallery_disagreement")  # the broken one is ruled out
