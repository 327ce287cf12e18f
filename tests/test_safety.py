"""Safety: file names from user strings stay inside the output folder; a checkpoint never runs code; a finished
training resumed from its checkpoint does not repeat its autopsy."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from cerebro import ModelAutopsy, run_autopsy
from cerebro.demo import EEGRegressor
from tests.conftest import N_CHANS, N_TIMES
from tests.models import TinyConv1d


class _EvilKeys(Dataset):
    """Dict batches whose metadata field names are path escapes."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.randn(4, 32), "y": torch.randn(1), "../../escaped": i % 2, "/etc/evil": i % 3}


def test_file_names_from_user_strings_stay_inside_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    summary = run_autopsy(TinyConv1d().eval(), DataLoader(_EvilKeys(), batch_size=4), output_dir=out,
                          diagnostics=["predictions", "failure_modes"])
    assert summary["diagnostics"]["failure_modes"]["status"] == "ok"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written), [p for p in written if out not in p.parents]
    figures = summary["diagnostics"]["failure_modes"]["artifacts"]
    assert any(a.startswith("figures/failure_modes_by_") and ".." not in a and a.count("/") == 1 for a in figures)
    assert not Path("/etc/evil").exists()


class _RunsCode:
    def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does on load
        return (os.system, (f"touch {_MARKER}",))


_MARKER = Path("/tmp/cerebro_checkpoint_ran_code")


def test_a_checkpoint_never_runs_code(tmp_path: Path) -> None:
    _MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": TinyConv1d().state_dict(), "payload": _RunsCode()}, path, pickle_module=pickle)
    loader = DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4, 32), torch.randn(4, 1)))
    summary = run_autopsy(TinyConv1d().eval(), loader, output_dir=tmp_path / "out", checkpoint=str(path),
                          diagnostics=["predictions"])
    assert summary["status"] == "failed"
    assert "weights_only=True" in summary["reason"] and str(path) in summary["reason"]
    assert not _MARKER.exists()


def test_resuming_a_finished_training_does_not_repeat_the_autopsy(eeg_dm, make_trainer, tmp_path: Path) -> None:
    def fit(ckpt_path: str | None) -> ModelAutopsy:
        pl.seed_everything(0, verbose=False)
        cb = ModelAutopsy(diagnostics=["predictions", "saliency"], max_samples=16, output_dir=tmp_path / "autopsy")
        trainer = make_trainer([ModelCheckpoint(monitor="val_loss", save_last=True), cb], max_epochs=2,
                               default_root_dir=tmp_path)
        trainer.fit(EEGRegressor(n_chans=N_CHANS, n_times=N_TIMES), datamodule=eeg_dm, ckpt_path=ckpt_path)
        return cb

    first = fit(None)
    assert first.last_summary["status"] == "ok"
    stamp = (tmp_path / "autopsy" / "arrays" / "saliency" / "attributions.npy").stat().st_mtime_ns
    last = next((tmp_path / "lightning_logs").rglob("last.ckpt"), None) or next(tmp_path.rglob("last.ckpt"))
    again = fit(str(last))
    d = again.last_summary["diagnostics"]
    assert d["predictions"]["resumed"] is True and d["saliency"]["resumed"] is True
    assert (tmp_path / "autopsy" / "arrays" / "saliency" / "attributions.npy").stat().st_mtime_ns == stamp
    assert again.last_summary["checkpoint"]["sha256"] == first.last_summary["checkpoint"]["sha256"]


@pytest.mark.parametrize("bad", [0, -1, True, "10"])
def test_time_budget_options_are_checked(bad) -> None:  # noqa: ANN001
    from cerebro import CerebroConfigError

    with pytest.raises(CerebroConfigError, match="time_budget_s` must be a positive number"):
        ModelAutopsy(time_budget_s=bad)


class _TrainingNote:
    """A harmless custom object some users pickle into their checkpoints."""

    def __init__(self) -> None:
        self.text = "lr warm-up 5 epochs"


def test_weights_only_opt_out_for_trusted_checkpoints(tmp_path: Path) -> None:
    model = TinyConv1d().eval()
    path = tmp_path / "mine.ckpt"
    torch.save({"state_dict": model.state_dict(), "note": _TrainingNote()}, path)
    loader = DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4, 32), torch.randn(4, 1)))
    refused = run_autopsy(model, loader, output_dir=tmp_path / "a", checkpoint=str(path), diagnostics=["predictions"])
    assert refused["status"] == "failed" and "set weights_only: false" in refused["reason"]
    with pytest.warns(UserWarning, match="weights_only=False: unpickling runs code named in the file"):
        trusted = run_autopsy(model, loader, output_dir=tmp_path / "b", checkpoint=str(path),
                              diagnostics=["predictions"], weights_only=False)
    assert trusted["status"] == "ok" and trusted["checkpoint"]["path"] == str(path)
