"""The post-training script: same engine and outputs as the callback, clear errors for bad checkpoints/classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.cli import _compose, run_from_config
from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

DATA = "{_target_:cerebro.demo.SyntheticEEGDataModule,n_train:32,n_val:16,n_test:16,n_chans:8,n_times:128,batch_size:8}"
DIAGS = ["autopsy.max_samples=16", "autopsy.diagnostics.integrated_gradients.n_steps=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A best checkpoint and the callback's own autopsy of it."""
    root = tmp_path_factory.mktemp("run")
    pl.seed_everything(0)
    dm = SyntheticEEGDataModule(n_train=32, n_val=16, n_test=16, n_chans=8, n_times=128, batch_size=8)
    autopsy = ModelAutopsy(output_dir=root / "callback_autopsy", max_samples=16,
                           diagnostics={"predictions": {}, "integrated_gradients": {"n_steps": 4}})
    trainer = pl.Trainer(max_epochs=2, default_root_dir=root, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ModelCheckpoint(monitor="val_loss"), autopsy])
    trainer.fit(EEGRegressor(n_chans=8, n_times=128), datamodule=dm)
    return Path(trainer.checkpoint_callback.best_model_path), root / "callback_autopsy"


def _cfg(overrides: list[str]):
    """The ``autopsy_script`` config as ``cerebro-autopsy`` composes it (its command-line shorthands spelled out)."""
    return _compose(overrides)


def test_script_matches_the_callback(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, callback_out = trained
    out = tmp_path / "script_autopsy"
    summary = run_from_config(_cfg([f"checkpoint='{ckpt}'", "model=cerebro.demo.EEGRegressor", f"data={DATA}",
                                    f"output_dir={out}", "device=cpu", *DIAGS]))
    assert summary["status"] == "ok", summary["reason"]
    assert summary["checkpoint"]["path"] == str(ckpt) and summary["checkpoint"]["source"] == "path"
    ref = json.loads((callback_out / "summary.json").read_text())
    assert summary["checkpoint"]["sha256"] == ref["checkpoint"]["sha256"]
    for key in ("predictions/predictions.npy", "predictions/targets.npy"):  # the script's and the callback's own
        # float32 forward passes: a few roundings (~1e-6 relative); the targets are copied, equal by construction
        np.testing.assert_allclose(np.load(out / "arrays" / key), np.load(callback_out / "arrays" / key), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(np.load(out / "arrays/integrated_gradients/attributions.npy"),
                               np.load(callback_out / "arrays/integrated_gradients/attributions.npy"), atol=1e-5)
    assert (out / "report.html").is_file()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CerebroConfigError, match="does not exist"):
        run_from_config(_cfg([f"checkpoint={tmp_path / 'nope.ckpt'}", "model=cerebro.demo.EEGRegressor",
                              f"data={DATA}", f"output_dir={tmp_path}"]))


def test_class_that_does_not_match_its_weights(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    model = "{_target_:cerebro.demo.EEGRegressor,n_chans:8,n_times:128,filters:4}"
    with pytest.raises(CerebroConfigError, match="does not match EEGRegressor: shape mismatch"):
        run_from_config(_cfg([f"checkpoint='{ckpt}'", f"model={model}", f"data={DATA}", f"output_dir={tmp_path}"]))
    with pytest.raises(CerebroConfigError, match="cannot be imported"):
        run_from_config(_cfg([f"checkpoint='{ckpt}'", "model=cerebro.demo.NoSuchModule", f"data={DATA}",
                              f"output_dir={tmp_path}"]))


def test_console_script_end_to_end(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    exe = Path(sys.executable).with_name("cerebro-autopsy")
    cmd = [str(exe), f"checkpoint='{ckpt}'", "model=cerebro.demo.EEGRegressor", f"data={DATA}",
           f"output_dir={tmp_path / 'out'}", "~autopsy.diagnostics.gradients", *DIAGS]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cerebro-autopsy: ok" in done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "gradients" not in summary["diagnostics"]
    assert list(summary["diagnostics"]) == ["predictions", "activations", "failure_modes", "integrated_gradients",
                                            "layer_gradcam", "spectral_integrated_gradients", "faithfulness"]
    assert {r["status"] for r in summary["diagnostics"].values()} == {"ok"}
    bad = subprocess.run([str(exe), f"checkpoint={tmp_path / 'missing.ckpt'}", "model=cerebro.demo.EEGRegressor",
                          f"data={DATA}"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr
    assert not (tmp_path / "outputs").exists()  # Hydra writes nothing beside the report


def test_script_list_form_runs_exactly_the_list_with_the_presets_options(trained: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """``'autopsy.diagnostics=[...]'`` on the script's eeg_regression: these diagnostics, in this order, each with
    eeg_regression's options overlaid by the ones given (faithfulness keeps the preset's blocks of 10 samples)."""
    ckpt, _ = trained
    summary = run_from_config(_cfg([f"checkpoint='{ckpt}'", "model=cerebro.demo.EEGRegressor", f"data={DATA}",
                                    f"output_dir={tmp_path}", "device=cpu", "autopsy.max_samples=8",
                                    "autopsy.diagnostics=[predictions,{integrated_gradients:{n_steps:4}},"
                                    "{faithfulness:{metric_samples:0,random_orders:1}}]"]))
    assert summary["status"] == "ok", summary.get("reason")
    assert list(summary["diagnostics"]) == ["predictions", "integrated_gradients", "faithfulness"]
    config = {name: options for entry in summary["config"] for name, options in entry.items()}
    assert config["integrated_gradients"]["n_steps"] == 4 and config["integrated_gradients"]["baseline"] == "zeros"
    assert config["faithfulness"]["units"] == "blocks" and config["faithfulness"]["window"] == 10
    assert config["faithfulness"]["metric_samples"] == 0 and config["faithfulness"]["random_orders"] == 1
    # the former recipe (drop the preset's group, add a list) still runs the list, with the diagnostics' defaults
    old = _cfg(["checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}", "~autopsy/diagnostics",
                "+autopsy.diagnostics=[predictions,saliency]"])
    assert "preset_diagnostics" not in old.autopsy and list(old.autopsy.diagnostics) == ["predictions", "saliency"]


def test_mixing_the_list_and_mapping_forms_on_the_command_line_is_one_clear_error() -> None:
    required = ["checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}"]
    with pytest.raises(CerebroConfigError, match=r"autopsy.diagnostics is a list here .*\{integrated_gradients:"):
        _cfg([*required, "autopsy.diagnostics=[predictions]", "~autopsy.diagnostics.gradients"])
    with pytest.raises(CerebroConfigError, match="a list and a mapping of autopsy.diagnostics cannot be merged"):
        _cfg([*required, "~autopsy.diagnostics.gradients", "autopsy.diagnostics=[predictions]"])
