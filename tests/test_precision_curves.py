"""Issue 20, item 2: ``faithfulness`` curves in reduced precision, guarded by their AUCs (bf16 emulated on any CPU;
``auto``'s speed judged by an injected clock, so the logic is tested, not this machine's speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cerebro.diagnostics.faithfulness as faithfulness
import cerebro.engine.precision as precision
from cerebro.demo.data import make_eeg_dataset
from cerebro.demo.model import EEGRegressor
from tests.autopsy_helpers import autopsy, load_array
from tests.test_precision import Clocked

AUCS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
METHODS = ("integrated_gradients", "saliency")


def clocked(requested: str, device: torch.device) -> Clocked:
    """The plan faithfulness builds, with bf16 passes 4x faster than float32 (the work itself is real)."""
    return Clocked(requested, {"fp32": 1.0, "bf16": 0.25})


@pytest.fixture(scope="module")
def case() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = EEGRegressor(n_chans=8).eval()
    x, _, _ = make_eeg_dataset(24, n_chans=8, seed=3)
    return model, x


def _run(case, path, **faith):  # noqa: ANN001, ANN003, ANN202
    model, x = case
    # the maps in float32: with reduced_candidate mocked, their own `auto` would decide on this machine's timing (a
    # loaded host can find emulated bf16 faster) and change the maps the curves perturb; the curves are under test
    diagnostics = [{"integrated_gradients": {"n_steps": 8, "precision": "fp32"}}, {"saliency": {"precision": "fp32"}},
                   {"faithfulness": {"metric_samples": 0, "steps": 6, **faith}}]
    summary = autopsy(model, (x,), path, diagnostics, loader_batch_size=8, batch_size=8)
    rec = summary["diagnostics"]["faithfulness"]
    assert rec["status"] == "ok", rec["reason"]
    return rec["metrics"]


def _curves(path) -> np.ndarray:  # noqa: ANN001
    return np.stack([load_array(path, "faithfulness", f"{m}_{kind}") for m in (*METHODS, "random")
                     for kind in ("deletion", "insertion")])


def test_forced_bf16_curves_keep_every_auc_within_001_of_fp32(case, tmp_path) -> None:  # noqa: ANN001
    ref = _run(case, tmp_path / "fp32", precision="fp32")
    m = _run(case, tmp_path / "bf16", precision="bf16")
    assert ref["precision"] == "fp32" and ref["precision_decision"]["points"].get("bf16") is None
    dec = m["precision_decision"]
    assert dec["requested"] == "bf16" and m["precision"] == "bf16" and dec["points"]["bf16"] > 0
    assert dec["samples"]["reduced"] == 24
    # the passes really ran in bf16: the curves moved, the AUCs the report prints did not (guard: 0.01)
    assert np.abs(_curves(tmp_path / "bf16") - _curves(tmp_path / "fp32")).max() > 0
    for name in METHODS:
        for key in AUCS:
            assert abs(m["methods"][name][key] - ref["methods"][name][key]) <= 0.01, (name, key)
        assert m["methods"][name]["verdict"] == ref["methods"][name]["verdict"]


def test_auto_keeps_bf16_after_a_side_by_side_first_block(case, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(precision, "reduced_candidate", lambda device: ("bf16", "mocked bf16 hardware"))
    monkeypatch.setattr(faithfulness, "PrecisionPlan", clocked)
    ref = _run(case, tmp_path / "fp32", precision="fp32")
    m = _run(case, tmp_path / "auto")
    dec = m["precision_decision"]
    assert dec["requested"] == "auto" and dec["speedup_per_point"] == pytest.approx(4.0)
    assert 0 <= dec["auc_error_vs_fp32"] <= 0.01 and "map_error_vs_fp32" not in dec
    assert m["precision"] == "mixed" and dec["samples"] == {"reduced": 16, "fell_back": 0, "fp32": 8}
    # the side-by-side block keeps its float32 curves: the float32 run's, row for row
    np.testing.assert_allclose(_curves(tmp_path / "auto")[:, :8], _curves(tmp_path / "fp32")[:, :8], rtol=1e-6,
                               atol=1e-9)
    for name in METHODS:
        for key in AUCS:
            assert abs(m["methods"][name][key] - ref["methods"][name][key]) <= 0.01, (name, key)


def test_auto_declines_when_an_auc_moves_beyond_the_tolerance(case, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(precision, "reduced_candidate", lambda device: ("bf16", "mocked bf16 hardware"))
    monkeypatch.setattr(faithfulness, "PrecisionPlan", clocked)
    _run(case, tmp_path / "fp32", precision="fp32")
    m = _run(case, tmp_path / "auto", precision_tolerance=0.0)  # 4x faster, but bf16 moves the AUCs a little
    dec = m["precision_decision"]
    assert dec["auc_error_vs_fp32"] > 0 and m["precision"] == "fp32"
    assert "moved the first chunk's AUCs by" in dec["reason"] and dec["reason"].endswith("float32")
    assert dec["samples"] == {"reduced": 0, "fell_back": 0, "fp32": 24}
    np.testing.assert_allclose(_curves(tmp_path / "auto"), _curves(tmp_path / "fp32"), rtol=1e-6, atol=1e-9)
