"""Every braindecode model that builds as a ``(B, 1)`` regressor on 129 x 200 windows at 100 Hz (the 2025 EEG
Foundation Challenge geometry), random weights, through the EEG diagnostics; one inside a real Lightning Trainer.

Models that do not build with ``Model(n_chans=129, n_outputs=1, n_times=200, sfreq=100)`` are skipped with the
constructor's exception (``scripts/zoo_matrix.py`` lists them in ``docs/compatibility.md``); the ten the issue names
must build. Models over ~2.5M parameters run only in the script (``--all``), to keep the CPU suite short;
``CEREBRO_ZOO_BRAINDECODE=required`` keeps only the ten named models (about 14 CPU-seconds per model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from tests.autopsy_helpers import load_array, load_summary
from tests.zoo.conftest import CaseRun, run_case
from tests.zoo.models import (BRAINDECODE_HEAVY, BRAINDECODE_REQUIRED, braindecode_case, braindecode_names,
                              build_braindecode, eeg_windows)

pytest.importorskip("braindecode")
NAMES = braindecode_names()
if os.environ.get("CEREBRO_ZOO_BRAINDECODE") == "required":  # a shorter CI: only the ten models the issue names
    NAMES = [n for n in NAMES if n in BRAINDECODE_REQUIRED]
_RUNS: dict[str, CaseRun] = {}


def braindecode_run(name: str, zoo_dir: Path) -> CaseRun:
    """The matrix run of one model (built and run once per test session)."""
    if name not in _RUNS:
        if name in BRAINDECODE_HEAVY:
            pytest.skip(f"{name}: {BRAINDECODE_HEAVY[name]}, over the CPU test budget (scripts/zoo_matrix.py --all)")
        try:
            model = build_braindecode(name)
        except Exception as err:  # noqa: BLE001 - recorded as the reason it is not in the matrix
            if name in BRAINDECODE_REQUIRED:
                raise
            pytest.skip(f"{name} does not build as a (B, 1) regressor on 129x200 at 100 Hz: "
                        f"{type(err).__name__}: {str(err)[:200]}")
        _RUNS[name] = run_case(braindecode_case(name, model), zoo_dir / name, model=model)
    return _RUNS[name]


def test_the_required_models_exist() -> None:
    assert set(BRAINDECODE_REQUIRED) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_braindecode_model(name: str, zoo_dir: Path) -> None:
    run = braindecode_run(name, zoo_dir)
    assert run.changed == [], f"the autopsy changed the user's model: {run.changed}"
    statuses = {n: r["status"] for n, r in run.summary["diagnostics"].items()}
    for diag in statuses:
        assert run.problems(diag) == []
    if name in BRAINDECODE_REQUIRED:
        assert set(statuses.values()) == {"ok"}, {n: run.rec(n)["reason"] for n, s in statuses.items() if s != "ok"}
    cam = run.rec("layer_gradcam")
    if cam["status"] == "ok":
        maps = load_array(run.out, "layer_gradcam", "attributions")
        assert maps.shape[0] == 4 and maps.shape[1] == 1 and maps.shape[-1] == 200  # (N, 1, T) or (N, 1, C, T)


@pytest.mark.parametrize("name", ["ATCNet", "EEGTCNet"])
def test_reused_modules_get_one_entry_per_call_site(name: str, zoo_dir: Path) -> None:
    """These models call one activation module at several places with different shapes; activations used to fail
    whole ("The size of tensor a (50) must match ...")."""
    rec = braindecode_run(name, zoo_dir).rec("activations")
    assert rec["status"] == "ok", rec["reason"]
    reused = rec["metrics"]["reused_modules"]
    assert reused, "expected at least one module called at several places"
    per = rec["metrics"]["per_layer"]
    for module in reused:
        sites = [k for k in per if k.startswith(f"{module}#")]
        assert len(sites) >= 2 and module not in per, (module, sites)
    assert "layers_not_summarised" not in rec["metrics"]


@pytest.mark.parametrize("name", ["ShallowFBCSPNet", "Deep4Net", "EEGNet"])
def test_final_classifier_conv_gives_a_flagged_constant_map(name: str, zoo_dir: Path) -> None:
    """``final_layer.conv_classifier`` has one output position: Grad-CAM there is constant and must say so."""
    model = braindecode_run(name, zoo_dir).model
    run = run_case(braindecode_case(name, model), zoo_dir / f"{name}_final", model=model,
                   diagnostics=[{"layer_gradcam": {"layer": "final_layer.conv_classifier"}}])
    rec = run.rec("layer_gradcam")
    assert rec["status"] == "ok", rec["reason"]
    assert any(f.startswith("degenerate map: every sample's map is constant") for f in rec["flags"]), rec["flags"]
    assert run.problems("layer_gradcam") == []


class Regressor(pl.LightningModule):
    """A LightningModule around a braindecode model, trained on response times (MSE)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.net = build_braindecode(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_eegnex_in_a_lightning_trainer_on_the_best_checkpoint(tmp_path: Path) -> None:
    """The challenge's model as users train it: a Trainer, a ModelCheckpoint, the autopsy on the best checkpoint."""
    x, y = eeg_windows(8)
    data = DataLoader(TensorDataset(x, y), batch_size=4)
    autopsy = ModelAutopsy(diagnostics=[{"integrated_gradients": {"n_steps": 4}}, "layer_gradcam"], max_samples=4,
                           eeg={"sfreq": 100})
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=2, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ckpt, autopsy])
    trainer.fit(Regressor("EEGNeX"), train_dataloaders=data, val_dataloaders=data)
    out = tmp_path / "autopsy"
    summary = load_summary(out)
    assert summary["checkpoint"]["source"] == "best" and summary["checkpoint"]["path"] == ckpt.best_model_path
    assert {n: r["status"] for n, r in summary["diagnostics"].items()} == dict.fromkeys(
        ("integrated_gradients", "layer_gradcam"), "ok")
    ig = load_array(out, "integrated_gradients", "attributions")
    assert ig.shape == (4, 129, 200) and np.isfinite(ig).all() and np.ptp(ig.reshape(4, -1), axis=1).min() > 0
    cam = summary["diagnostics"]["layer_gradcam"]
    cam_maps = load_array(out, "layer_gradcam", "attributions")
    flat = cam_maps.reshape(4, -1)
    varies = bool(np.all(np.ptp(flat, axis=1) > 1e-4 * np.abs(flat).max(axis=1)))
    assert varies or any(f.startswith("degenerate map") for f in cam["flags"]), cam["flags"]
