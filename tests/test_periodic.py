"""Periodic autopsies during training (``every_n_epochs``) and the drift they add to the final report."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import spearmanr

from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.demo import EEGRegressor
from tests.autopsy_helpers import load_summary
from tests.conftest import N_CHANS, N_TIMES


def _fit(make_trainer, dm, callbacks, root: Path) -> EEGRegressor:
    pl.seed_everything(0, verbose=False)
    model = EEGRegressor(n_chans=N_CHANS, n_times=N_TIMES)
    make_trainer([ModelCheckpoint(monitor="val_loss"), *callbacks], max_epochs=3, default_root_dir=root).fit(
        model, datamodule=dm)
    return model


def test_periodic_autopsies_record_drift_and_leave_training_alone(eeg_dm, make_trainer, tmp_path: Path) -> None:
    cb = ModelAutopsy(diagnostics=["predictions", {"integrated_gradients": {"n_steps": 8}}], max_samples=16,
                      every_n_epochs=1, periodic_max_samples=8, output_dir=tmp_path / "autopsy")
    model = _fit(make_trainer, eeg_dm, [cb], tmp_path / "with")
    # the same training without the callback ends with the same weights: the periodic runs touched nothing
    plain = _fit(make_trainer, eeg_dm, [], tmp_path / "without")
    for (n, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), n  # equal by construction: same seed, same ops, same kernels in one process

    epochs = [tmp_path / "autopsy" / "epochs" / f"epoch_{e:03d}" for e in range(3)]
    for folder in epochs:
        s = load_summary(folder)
        assert s["status"] == "ok" and s["checkpoint"]["source"] == "live" and s["n_samples"] == 8
        assert list(s["diagnostics"]) == ["activations", "integrated_gradients"]
    assert [r["stage"] for r in cb.runs] == ["epoch", "epoch", "epoch", "fit"]
    assert [r.get("epoch") for r in cb.runs[:3]] == [0, 1, 2]

    final = load_summary(tmp_path / "autopsy")
    drift = final["drift"]
    assert drift["epochs"] == [0, 1, 2] and len(drift["dead_unit_fraction"]) == 3
    maps = [np.load(f / "arrays" / "integrated_gradients" / "mean_abs_attribution.npy") for f in epochs]
    expected = [spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(maps[:-1], maps[1:])]
    # float64 rank correlations of the same saved maps on both sides
    np.testing.assert_allclose(drift["attributions"]["integrated_gradients"], expected, atol=1e-9)
    dead = [np.mean([v["dead_unit_fraction"] for v in load_summary(f)["diagnostics"]["activations"]["metrics"]
                     ["per_layer"].values()]) for f in epochs]
    np.testing.assert_allclose(drift["dead_unit_fraction"], dead)
    assert "figures/drift_attributions.png" in drift["artifacts"]
    page = (tmp_path / "autopsy" / "report.html").read_text()
    assert "Over training" in page and "drift_attributions" in page


def test_periodic_options_are_checked_before_training() -> None:
    with pytest.raises(CerebroConfigError, match="every_n_epochs"):
        ModelAutopsy(every_n_epochs=0)
    with pytest.raises(CerebroConfigError, match="`periodic_max_samples` must be a positive int, got 0"):
        ModelAutopsy(every_n_epochs=2, periodic_max_samples=0)
    with pytest.raises(CerebroConfigError, match="Did you mean 'integrated_gradients'"):
        ModelAutopsy(every_n_epochs=2, periodic_diagnostics=["integrated_gradient"])
