"""DDP: ranks share the attribution work without duplicates; the report equals a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

import cerebro
from cerebro import ModelAutopsy, run_autopsy
from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.demo import EEGRegressor, SyntheticEEGDataModule
from cerebro.engine.distributed import Comm

# layer_gradcam in fp32 on every host: the DDP run is compared with a single process at float32 tolerance, and on a
# CPU with AMX precision auto could run later chunks in bf16 (tests/conftest.py pins auto only in-process)
DIAGNOSTICS = ["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
               {"layer_gradcam": {"precision": "fp32"}}]
ROOT = Path(__file__).resolve().parent.parent


@cerebro.register_diagnostic("rank_one_fault")
class RankOneFault(AttributionDiagnostic):
    """Fails on rank 1 only, after rank 0 produced its first block."""

    def blocks(self, ctx, state, samples) -> Iterator:  # noqa: ANN001
        if ctx.comm.rank == 1:
            raise RuntimeError("injected fault on rank 1")
        for start in range(samples.start, samples.stop):
            yield start, {"attributions": np.ones((1, 3), dtype=np.float32)}


def _dm() -> SyntheticEEGDataModule:
    return SyntheticEEGDataModule(n_train=32, n_val=21, n_test=8, n_chans=8, n_times=128, batch_size=8)


def _single_process(ckpt: str, out: Path) -> Path:
    dm = _dm()
    dm.setup("validate")
    summary = run_autopsy(EEGRegressor(n_chans=8, n_times=128), dm.val_dataloader(), diagnostics=DIAGNOSTICS,
                          checkpoint=ckpt, output_dir=out, max_samples=21)
    assert summary["status"] == "ok", summary["reason"]
    return out


def _assert_same_report(ddp: Path, single: Path) -> None:
    a, b = json.loads((ddp / "summary.json").read_text()), json.loads((single / "summary.json").read_text())
    assert a["status"] == "ok", a["reason"]
    assert a["world_size"] == 2 and b["world_size"] == 1
    assert a["n_samples"] == b["n_samples"] == 21
    assert a["checkpoint"]["sha256"] == b["checkpoint"]["sha256"]
    for key in ("integrated_gradients/attributions", "integrated_gradients/convergence_delta",
                "integrated_gradients/indices", "layer_gradcam/attributions", "layer_gradcam/indices",
                "predictions/predictions", "predictions/indices", "failure_modes/errors"):
        x, y = np.load(ddp / "arrays" / f"{key}.npy"), np.load(single / "arrays" / f"{key}.npy")
        assert x.shape == y.shape, key
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5, err_msg=key)
    np.testing.assert_array_equal(np.load(ddp / "arrays/integrated_gradients/indices.npy"), np.arange(21))
    for name in ("integrated_gradients", "layer_gradcam"):  # each rank computed its own share, no duplicates
        assert a["diagnostics"][name]["metrics"]["samples_per_rank"] == [11, 10]


def test_shares_cover_every_sample_once() -> None:
    for n in (0, 1, 2, 7, 21, 64):
        for world in (1, 2, 3, 8):
            parts = [Comm(r, world).my_slice(n) for r in range(world)]
            covered = [i for p in parts for i in range(p.start, p.stop)]
            assert covered == list(range(n)), (n, world)
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def _spawn_trainer(tmp_path: Path, autopsy: ModelAutopsy) -> pl.Trainer:
    return pl.Trainer(strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=120)), accelerator="cpu", devices=2,
                      max_epochs=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[ModelCheckpoint(monitor="val_loss"), autopsy])


def test_ddp_spawn_equals_single_process(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    autopsy = ModelAutopsy(output_dir=tmp_path / "ddp", max_samples=21, diagnostics=DIAGNOSTICS)
    _spawn_trainer(tmp_path, autopsy).fit(EEGRegressor(n_chans=8, n_times=128), datamodule=_dm())
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["checkpoint"]["source"] == "best"
    _assert_same_report(tmp_path / "ddp", _single_process(summary["checkpoint"]["path"], tmp_path / "single"))


def test_a_failure_on_one_rank_is_reported_not_a_hang(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    autopsy = ModelAutopsy(output_dir=tmp_path / "ddp", max_samples=21,
                           diagnostics=["rank_one_fault", {"integrated_gradients": {"n_steps": 4}}])
    _spawn_trainer(tmp_path, autopsy).fit(EEGRegressor(n_chans=8, n_times=128), datamodule=_dm())
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    fault = summary["diagnostics"]["rank_one_fault"]
    assert fault["status"] == "failed" and fault["reason"] == "RuntimeError: rank 1: RuntimeError: injected fault on rank 1"
    assert summary["diagnostics"]["integrated_gradients"]["status"] == "ok"
    assert summary["status"] == "partial"
    assert np.load(tmp_path / "ddp/arrays/integrated_gradients/attributions.npy").shape == (21, 8, 128)


def test_ddp_subprocess_script_equals_single_process(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_fit.py"), str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "autopsy" / "summary.json").read_text())
    _assert_same_report(tmp_path / "autopsy", _single_process(summary["checkpoint"]["path"], tmp_path / "single"))
