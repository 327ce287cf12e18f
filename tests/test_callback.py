"""The ModelAutopsy callback inside real Lightning runs: which checkpoint it studies, fallbacks, stages, edge-case
sample sets, config typos, custom diagnostics, dict batches and its own checkpointed state.

Real ``lightning.pytorch.Trainer`` and real Captum throughout; mocks are not used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset, TensorDataset

import cerebro
from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.demo import EEGRegressor, SyntheticEEGDataModule
from cerebro.errors import AutopsyFailure
from cerebro.registry import _REGISTRY

N_CHANS, N_TIMES = 8, 128  # same geometry as the `eeg_dm` fixture in conftest.py
N = 16  # max_samples of most tests
FAST_IG = {"integrated_gradients": {"n_steps": 8}}
ALL_SIX = ["predictions", "gradients", "activations", "failure_modes", FAST_IG, "layer_gradcam"]
ATTRIBUTIONS = [FAST_IG, "layer_gradcam"]


# -- helpers ------------------------------------------------------------------------------------------------------
class Regressor(EEGRegressor):
    """The demo regressor ((B, C, T) -> (B, 1)) whose logged ``val_loss`` gets ``val_offset * epoch`` added.

    A positive offset makes epoch 0 the best checkpoint for sure (so "best" and "last" weights differ); a negative
    one makes every epoch an improvement. ``training_steps`` counts optimisation steps.
    """

    def __init__(self, val_offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(n_chans=N_CHANS, n_times=N_TIMES, **kwargs)
        self.val_offset = val_offset
        self.training_steps = 0

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.training_steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch[0], batch[1]
        loss = self.loss_fn(self(x), y) + self.val_offset * self.current_epoch
        self.log("val_loss", loss)
        return loss


def make_model(val_offset: float = 0.0, seed: int = 0) -> Regressor:
    pl.seed_everything(seed, verbose=False)
    return Regressor(val_offset=val_offset)


def read_summary(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / "summary.json"
    assert path.is_file(), f"no summary.json in {out_dir}"
    return json.loads(path.read_text())


def load_array(out_dir: Path, diagnostic: str, key: str) -> np.ndarray:
    path = Path(out_dir) / "arrays" / diagnostic / f"{key}.npy"
    assert path.is_file(), f"missing array {path}"
    return np.load(path)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_informative(arr: np.ndarray, shape: tuple[int, ...]) -> None:
    """Right shape, all finite, not all zero, and not the same map for every sample."""
    assert arr.shape == shape
    assert np.isfinite(arr).all()
    assert np.count_nonzero(arr) > 0.5 * arr.size
    assert not np.allclose(arr, arr[:1])


def assert_attributions_ok(summary: dict[str, Any], out_dir: Path, n: int) -> None:
    for name in ("integrated_gradients", "layer_gradcam"):
        rec = summary["diagnostics"][name]
        assert rec["status"] == "ok", (name, rec["reason"])
        assert rec["reason"] is None
        assert not [f for f in rec["flags"] if f.startswith("degenerate")], rec["flags"]
    assert_informative(load_array(out_dir, "integrated_gradients", "attributions"), (n, N_CHANS, N_TIMES))
    # The demo's last conv sees (B, 16, 1, T): Grad-CAM's one-row map goes onto the time axis.
    assert_informative(load_array(out_dir, "layer_gradcam", "attributions"), (n, 1, N_TIMES))
    assert summary["diagnostics"]["layer_gradcam"]["metrics"]["layer"] == "net.5"
    assert summary["diagnostics"]["integrated_gradients"]["metrics"]["n_steps"] == 8


def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(x).squeeze(1).numpy()


# -- 1. the seed scenario: best checkpoint, verified byte for byte and weight for weight -------------------------
def test_fit_autopsy_studies_best_checkpoint(eeg_dm: SyntheticEEGDataModule, make_trainer, tmp_path: Path) -> None:
    model = make_model(val_offset=1.0)  # val_loss rises by 1 per epoch: epoch 0 is the best, epoch 2 the last
    ckpt = ModelCheckpoint(monitor="val_loss")
    autopsy = ModelAutopsy(diagnostics=ALL_SIX, max_samples=N)
    trainer = make_trainer([ckpt, autopsy], max_epochs=3)
    trainer.fit(model, datamodule=eeg_dm)

    out = tmp_path / "autopsy"  # default: <trainer.log_dir or default_root_dir>/autopsy (logger=False)
    summary = read_summary(out)
    assert summary == {**summary, "status": "ok", "reason": None, "n_samples": N}
    assert autopsy.last_summary["status"] == "ok"
    best = trainer.checkpoint_callback.best_model_path
    assert Path(best).name.startswith("epoch=0-")
    assert summary["checkpoint"] == {"source": "best", "path": best, "sha256": sha256(best), "fallback_reason": None}
    assert summary["device"] == "cpu"
    assert summary["target"] == {"kind": "regression", "index": None}
    assert summary["samples"]["source"] == "val split"
    assert [next(iter(c)) for c in summary["config"]] == [
        "predictions", "gradients", "activations", "failure_modes", "integrated_gradients", "layer_gradcam"]
    assert {n: r["status"] for n, r in summary["diagnostics"].items()} == {
        n: "ok" for n in ("predictions", "gradients", "activations", "failure_modes", "integrated_gradients",
                          "layer_gradcam")}
    assert_attributions_ok(summary, out, N)

    # Report files: every listed artifact exists, figures are PNGs, the HTML shows the status.
    for rec in summary["diagnostics"].values():
        for art in rec["artifacts"]:
            assert (out / art).is_file(), art
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 6 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # The header shows the run's status; "ok, with warnings" exactly when a finding is a warning or a problem.
    warned = any(f["severity"] != "info" for f in summary["findings"])
    word, css = ("ok, with warnings", "status-warn") if warned else ("ok", "status-ok")
    assert f"cerebro autopsy: <span class='{css}'>{word}</span>" in (out / "report.html").read_text()

    # The autopsy used the BEST checkpoint's weights, not the last ones.
    x_val = eeg_dm.splits["val"].tensors[0][:N]
    y_val = eeg_dm.splits["val"].tensors[1][:N]
    fresh = EEGRegressor(n_chans=N_CHANS, n_times=N_TIMES)
    fresh.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    expected = predict(fresh, x_val)
    got = load_array(out, "predictions", "predictions")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    last = predict(model, x_val)  # the live module holds the last epoch's weights
    assert np.abs(last - expected).max() > 1e-3, "precondition: best and last weights must differ"
    np.testing.assert_array_equal(load_array(out, "predictions", "indices"), np.arange(N))
    # equal by construction: the labels are copied, not computed
    np.testing.assert_allclose(load_array(out, "predictions", "targets"), y_val[:, 0].numpy(), atol=0)
    rmse = float(np.sqrt(np.mean((expected - y_val[:, 0].numpy()) ** 2)))
    assert summary["diagnostics"]["predictions"]["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-4)


# -- 2. callback order --------------------------------------------------------------------------------------------
def test_autopsy_before_modelcheckpoint_still_uses_final_best(eeg_dm, make_trainer, tmp_path: Path) -> None:
    model = make_model(val_offset=-1.0)  # every epoch improves: the best path moves each epoch, ends at epoch 2
    autopsy = ModelAutopsy(diagnostics=["predictions"], max_samples=N)
    ckpt = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    trainer = make_trainer([autopsy, ckpt], max_epochs=3)
    trainer.fit(model, datamodule=eeg_dm)

    summary = read_summary(tmp_path / "autopsy")
    best = ckpt.best_model_path
    assert Path(best).name.startswith("epoch=2-"), best
    assert summary["status"] == "ok"
    assert summary["checkpoint"]["source"] == "best"
    assert summary["checkpoint"]["path"] == best == trainer.checkpoint_callback.best_model_path
    assert summary["checkpoint"]["sha256"] == sha256(best)
    # epoch 2's weights are the live weights here, so the predictions match the live module.
    x_val = eeg_dm.splits["val"].tensors[0][:N]
    np.testing.assert_allclose(load_array(tmp_path / "autopsy", "predictions", "predictions"), predict(model, x_val),
                               atol=1e-5)


# -- 3. EarlyStopping ---------------------------------------------------------------------------------------------
def test_early_stopping_still_runs_autopsy_on_best(eeg_dm, make_trainer, tmp_path: Path) -> None:
    model = make_model(val_offset=-1.0)  # val_loss falls every epoch, so mode="max" stops after the 2nd epoch
    stopper = EarlyStopping(monitor="val_loss", mode="max", patience=0)
    ckpt = ModelCheckpoint(monitor="val_loss")
    autopsy = ModelAutopsy(diagnostics=ATTRIBUTIONS, max_samples=N)
    trainer = make_trainer([autopsy, stopper, ckpt], max_epochs=6)
    trainer.fit(model, datamodule=eeg_dm)

    assert stopper.stopped_epoch == 1 and trainer.current_epoch == 2  # stopped early, well before max_epochs
    summary = read_summary(tmp_path / "autopsy")
    assert summary["status"] == "ok"
    assert summary["checkpoint"]["source"] == "best"
    assert summary["checkpoint"]["path"] == ckpt.best_model_path
    assert Path(ckpt.best_model_path).name.startswith("epoch=1-")
    assert summary["checkpoint"]["sha256"] == sha256(ckpt.best_model_path)
    assert_attributions_ok(summary, tmp_path / "autopsy", N)
    assert autopsy.runs == [{"stage": "fit", "status": "ok", "output_dir": str(tmp_path / "autopsy")}]


# -- 4. fallbacks to the live module ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trainer_kwargs", "extra_callbacks", "expected"),
    [
        ({"enable_checkpointing": False}, lambda: [], "no ModelCheckpoint"),
        ({"fast_dev_run": True}, lambda: [], "fast_dev_run"),
        ({}, lambda: [ModelCheckpoint(save_top_k=0)], "save_top_k=0"),
    ],
    ids=["no_checkpoint_callback", "fast_dev_run", "save_top_k_0"],
)
def test_fallback_to_live_module(eeg_dm, make_trainer, tmp_path: Path, trainer_kwargs, extra_callbacks,
                                 expected: str) -> None:
    model = make_model()
    autopsy = ModelAutopsy(diagnostics=["predictions"], max_samples=N)
    trainer = make_trainer([autopsy, *extra_callbacks()], max_epochs=1, **trainer_kwargs)
    trainer.fit(model, datamodule=eeg_dm)

    summary = read_summary(tmp_path / "autopsy")
    assert summary["status"] == "ok"
    assert summary["n_samples"] == N
    ck = summary["checkpoint"]
    assert ck["source"] == "live" and ck["path"] is None and ck["sha256"] is None
    assert isinstance(ck["fallback_reason"], str) and expected in ck["fallback_reason"]
    assert ck["fallback_reason"].startswith("checkpoint='best' unavailable")
    assert not list(tmp_path.rglob("*.ckpt"))  # indeed nothing to load
    # The live (trained) module was studied.
    x_val = eeg_dm.splits["val"].tensors[0][:N]
    np.testing.assert_allclose(load_array(tmp_path / "autopsy", "predictions", "predictions"), predict(model, x_val),
                               atol=1e-5)


# -- 5. after trainer.test (hook under torch.inference_mode) -----------------------------------------------------
def test_run_on_test_stage_under_inference_mode(eeg_dm, make_trainer, tmp_path: Path) -> None:
    seen: dict[str, bool] = {}

    class InferenceProbe(Callback):
        def on_test_end(self, trainer, pl_module):  # noqa: ANN001
            seen["inference_mode"] = torch.is_inference_mode_enabled()

    model = make_model()
    autopsy = ModelAutopsy(diagnostics=ATTRIBUTIONS, run_on=("test",), split="test", max_samples=N)
    trainer = make_trainer([InferenceProbe(), autopsy])
    trainer.test(model, datamodule=eeg_dm, verbose=False)

    assert seen == {"inference_mode": True}  # the hook really runs under inference_mode
    out = tmp_path / "autopsy"  # the first (only) stage of run_on gets the plain folder name
    summary = read_summary(out)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["samples"]["source"] == "test split"
    assert summary["checkpoint"]["source"] == "live"  # trainer.test without fit: no best checkpoint
    assert_attributions_ok(summary, out, N)
    assert autopsy.runs == [{"stage": "test", "status": "ok", "output_dir": str(out)}]


def test_run_on_fit_does_not_run_after_test(eeg_dm, make_trainer, tmp_path: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=["predictions"], run_on=("fit",), max_samples=N)
    trainer = make_trainer([autopsy])
    results = trainer.test(make_model(), datamodule=eeg_dm, verbose=False)
    assert len(results) == 1 and "test_loss" in results[0]  # the test itself ran
    assert autopsy.runs == [] and autopsy.last_summary is None
    assert not (tmp_path / "autopsy").exists() and not (tmp_path / "autopsy_test").exists()
    assert not list(tmp_path.rglob("summary.json"))


# -- 6. batch size 1 ----------------------------------------------------------------------------------------------
def test_batch_size_one(eeg_dm, make_trainer, tmp_path: Path) -> None:
    eeg_dm.setup("fit")
    loader = DataLoader(eeg_dm.splits["val"], batch_size=1)
    autopsy = ModelAutopsy(diagnostics=ALL_SIX, dataloader=loader, max_samples=3)
    trainer = make_trainer([autopsy, ModelCheckpoint(monitor="val_loss")], max_epochs=1)
    trainer.fit(make_model(), datamodule=eeg_dm)

    out = tmp_path / "autopsy"
    summary = read_summary(out)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["n_samples"] == 3
    assert summary["samples"]["source"] == "dataloader"
    assert all(r["status"] == "ok" for r in summary["diagnostics"].values()), summary["diagnostics"]
    assert_attributions_ok(summary, out, 3)
    assert load_array(out, "predictions", "predictions").shape == (3,)
    np.testing.assert_array_equal(load_array(out, "predictions", "indices"), [0, 1, 2])


# -- 7. max_samples larger than the data --------------------------------------------------------------------------
def test_max_samples_larger_than_data(eeg_dm, make_trainer, tmp_path: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=["predictions", "failure_modes"], max_samples=1000)
    trainer = make_trainer([autopsy], max_epochs=1, enable_checkpointing=False)
    trainer.fit(make_model(), datamodule=eeg_dm)

    out = tmp_path / "autopsy"
    summary = read_summary(out)
    assert summary["status"] == "ok"
    assert summary["n_samples"] == 32
    assert summary["samples"]["available"] == 32 and summary["samples"]["max_samples"] == 1000
    np.testing.assert_array_equal(load_array(out, "predictions", "indices"), np.arange(32))
    np.testing.assert_allclose(load_array(out, "predictions", "targets"), eeg_dm.splits["val"].tensors[1][:, 0].numpy())
    assert load_array(out, "failure_modes", "errors").shape == (32,)


# -- 8. empty sample set ------------------------------------------------------------------------------------------
def _empty_loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(0, N_CHANS, N_TIMES), torch.zeros(0, 1)), batch_size=4)


def test_empty_sample_set_is_recorded_not_raised(eeg_dm, make_trainer, tmp_path: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=ATTRIBUTIONS, dataloader=_empty_loader(), max_samples=N)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = make_trainer([autopsy, ckpt], max_epochs=1)
    trainer.fit(make_model(), datamodule=eeg_dm)  # must not raise

    assert Path(ckpt.best_model_path).is_file()
    assert "state_dict" in torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    summary = read_summary(tmp_path / "autopsy")
    assert summary["status"] == "failed"
    assert "0 samples" in summary["reason"]
    assert "the dataloader holds 0 samples" in summary["reason"]  # names the source of the samples
    assert summary["n_samples"] == 0 and summary["diagnostics"] == {}
    assert autopsy.runs == [{"stage": "fit", "status": "failed", "output_dir": str(tmp_path / "autopsy")}]
    assert (tmp_path / "autopsy" / "report.html").is_file()


def test_empty_sample_set_raises_in_strict_mode(eeg_dm, make_trainer, tmp_path: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=ATTRIBUTIONS, dataloader=_empty_loader(), max_samples=N, fail_on_error=True)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = make_trainer([autopsy, ckpt], max_epochs=1)
    with pytest.raises(AutopsyFailure, match="0 samples"):
        trainer.fit(make_model(), datamodule=eeg_dm)
    assert Path(ckpt.best_model_path).is_file()  # training results survive even in strict mode
    assert read_summary(tmp_path / "autopsy")["status"] == "failed"


# -- 9. configuration typos fail before training ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"diagnostics": ["integrated_gradient"]}, "Did you mean 'integrated_gradients'?"),
        ({"diagnostics": [{"integrated_gradients": {"n_step": 5}}]}, "Did you mean 'n_steps'?"),
        ({"checkpoint": "bset"}, "Did you mean 'best'?"),
        ({"split": "vall"}, "Did you mean 'val'?"),
        ({"run_on": ("fitt",)}, "Did you mean 'fit'?"),
        ({"target": "regresion"}, "Did you mean 'regression'?"),
    ],
    ids=["diagnostic_name", "option_name", "checkpoint", "split", "run_on", "target"],
)
def test_config_typo_fails_at_construction(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(CerebroConfigError) as info:
        ModelAutopsy(**kwargs)
    msg = str(info.value)
    assert expected in msg
    bad = next(iter(kwargs.values()))
    bad = bad[0] if isinstance(bad, (list, tuple)) else bad
    bad = "n_step" if isinstance(bad, dict) else bad
    assert repr(bad) in msg  # the message quotes the offending value


def test_misspelled_layer_fails_before_first_training_step(eeg_dm, make_trainer, tmp_path: Path) -> None:
    model = make_model()
    autopsy = ModelAutopsy(diagnostics=[{"layer_gradcam": {"layer": "net.99"}}], max_samples=N)
    trainer = make_trainer([autopsy, ModelCheckpoint(monitor="val_loss")], max_epochs=1)
    with pytest.raises(CerebroConfigError) as info:
        trainer.fit(model, datamodule=eeg_dm)
    msg = str(info.value)
    assert "'net.99'" in msg and "not a submodule" in msg
    assert all(name in msg for name in ("net.0", "net.2", "net.5"))  # lists the conv layers to choose from
    assert model.training_steps == 0 and trainer.global_step == 0
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("summary.json"))


# -- 10. user diagnostics: failing and working --------------------------------------------------------------------
@pytest.fixture
def register_temp():
    """Register diagnostics for one test and remove them from the global registry afterwards."""
    names: list[str] = []

    def _register(name: str, cls: type) -> type:
        assert name not in _REGISTRY, f"{name!r} is already registered"
        names.append(name)
        return cerebro.register_diagnostic(name)(cls)

    yield _register
    for name in names:
        _REGISTRY.pop(name, None)


def test_failing_diagnostic_is_isolated(eeg_dm, make_trainer, tmp_path: Path, register_temp) -> None:
    class Boom(cerebro.Diagnostic):
        def run(self, ctx, out):  # noqa: ANN001
            raise RuntimeError("kaboom")

    register_temp("boom", Boom)
    autopsy = ModelAutopsy(diagnostics=["predictions", "boom", FAST_IG], max_samples=N)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = make_trainer([autopsy, ckpt], max_epochs=1)
    with pytest.warns(UserWarning, match="diagnostic 'boom' failed: RuntimeError: kaboom"):
        trainer.fit(make_model(), datamodule=eeg_dm)

    out = tmp_path / "autopsy"
    summary = read_summary(out)
    boom = summary["diagnostics"]["boom"]
    assert boom["status"] == "failed"
    assert boom["reason"] == "RuntimeError: kaboom"
    assert "boom.traceback.txt" in boom["artifacts"]
    assert "kaboom" in (out / "boom.traceback.txt").read_text()
    assert summary["diagnostics"]["predictions"]["status"] == "ok"
    assert summary["diagnostics"]["integrated_gradients"]["status"] == "ok"
    assert list(summary["diagnostics"]) == ["predictions", "boom", "integrated_gradients"]  # later ones still ran
    assert summary["status"] == "partial"
    assert "boom" in summary["reason"]
    # The training result is intact and is the file the autopsy studied.
    assert Path(ckpt.best_model_path).is_file()
    assert summary["checkpoint"]["sha256"] == sha256(ckpt.best_model_path)
    assert "state_dict" in torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)


def test_registered_user_diagnostic_works_like_builtins(eeg_dm, make_trainer, tmp_path: Path,
                                                        register_temp) -> None:
    class OutputRange(cerebro.Diagnostic):
        def run(self, ctx, out):  # noqa: ANN001
            out.metric("x", 1.0)
            out.metric("n", ctx.n)
            out.metric("max_output", float(ctx.outputs.max()))
            out.array("outputs", ctx.outputs)

    register_temp("output_range", OutputRange)
    assert "output_range" in cerebro.available_diagnostics()
    autopsy = ModelAutopsy(diagnostics=["predictions", "output_range"], max_samples=N)
    trainer = make_trainer([autopsy, ModelCheckpoint(monitor="val_loss")], max_epochs=1)
    trainer.fit(make_model(), datamodule=eeg_dm)

    out = tmp_path / "autopsy"
    summary = read_summary(out)
    assert summary["status"] == "ok"
    rec = summary["diagnostics"]["output_range"]
    assert rec["status"] == "ok" and rec["reason"] is None and rec["flags"] == []
    assert rec["metrics"]["x"] == 1.0 and rec["metrics"]["n"] == N
    preds = load_array(out, "predictions", "predictions")
    assert rec["metrics"]["max_output"] == pytest.approx(float(preds.max()), abs=1e-6)
    assert rec["artifacts"] == ["arrays/output_range/outputs.npy"]
    assert load_array(out, "output_range", "outputs").shape == (N, 1)
    assert {"output_range": {}} in summary["config"]
    assert "output_range" in (out / "report.html").read_text()


# -- 11. dict batches ---------------------------------------------------------------------------------------------
class DictEEG(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, subject: torch.Tensor) -> None:
        self.x, self.y, self.subject = x, y, subject

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"eeg": self.x[i], "rt": self.y[i], "subject": self.subject[i]}


def test_dict_batches_with_keys(tmp_path: Path) -> None:
    from cerebro.demo import make_eeg_dataset

    x, y, subject = make_eeg_dataset(32, N_CHANS, N_TIMES, seed=3)
    loader = DataLoader(DictEEG(x, y, subject), batch_size=8)
    model = make_model()
    summary = cerebro.run_autopsy(model, loader, diagnostics=["predictions", "failure_modes", FAST_IG],
                                  output_dir=tmp_path, max_samples=24, input_key="eeg", target_key="rt")

    assert summary["status"] == "ok", summary["reason"]
    on_disk = read_summary(tmp_path)
    assert on_disk["status"] == "ok" and on_disk["diagnostics"]["failure_modes"] == summary["diagnostics"]["failure_modes"]
    assert summary["n_samples"] == 24
    assert summary["samples"]["metadata_fields"] == ["subject"] and summary["samples"]["has_labels"] is True
    fm = summary["diagnostics"]["failure_modes"]["metrics"]
    assert "by_group" in fm and set(fm["by_group"]) == {"subject"}
    groups = fm["by_group"]["subject"]
    expected = {str(s): int((subject[:24] == s).sum()) for s in subject[:24].unique().tolist()}
    assert {g: d["n"] for g, d in groups.items()} == expected
    assert len(groups) >= 2
    # The labels came from "rt" and the inputs from "eeg".
    np.testing.assert_allclose(load_array(tmp_path, "predictions", "targets"), y[:24, 0].numpy())
    np.testing.assert_allclose(load_array(tmp_path, "predictions", "predictions"), predict(model, x[:24]), atol=1e-5)
    assert load_array(tmp_path, "integrated_gradients", "attributions").shape == (24, N_CHANS, N_TIMES)


# -- 12. the callback's checkpointed state ------------------------------------------------------------------------
def test_state_dict_is_primitive_and_records_runs(eeg_dm, make_trainer, tmp_path: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=["predictions"], max_samples=N)
    assert autopsy.state_dict() == {"runs": []}
    trainer = make_trainer([autopsy, ModelCheckpoint(monitor="val_loss")], max_epochs=1)
    trainer.fit(make_model(), datamodule=eeg_dm)

    state = autopsy.state_dict()
    expected = {"runs": [{"stage": "fit", "status": "ok", "output_dir": str(tmp_path / "autopsy")}]}
    assert state == expected
    assert json.loads(json.dumps(state)) == expected  # only JSON primitives

    def primitive(v: Any) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and primitive(x) for k, x in v.items())
        if isinstance(v, list):
            return all(primitive(x) for x in v)
        return v is None or isinstance(v, (str, int, float, bool))

    assert primitive(state)
    # It travels in a Lightning checkpoint and restores into a fresh callback.
    path = tmp_path / "after_autopsy.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["callbacks"][autopsy.state_key]
    assert saved == expected
    restored = ModelAutopsy(diagnostics=["predictions"])
    restored.load_state_dict(saved)
    assert restored.state_dict() == expected


# -- the bundled demo data with short windows ---------------------------------------------------------------------
@pytest.mark.parametrize("n_times", [64, 100])
def test_demo_data_too_short_for_planted_window_fails_clearly(n_times: int) -> None:
    # n_times=64 used to die in numpy broadcasting ((0,) vs (40,)); windows must cover PLANTED_WINDOW (80..120).
    dm = SyntheticEEGDataModule(n_train=64, n_val=32, n_test=32, n_chans=8, n_times=n_times, batch_size=16)
    with pytest.raises(ValueError, match=rf"n_times >= 120, got n_chans=8, n_times={n_times}$"):
        dm.setup("fit")
