"""Shared fixtures for cerebro's tests: a tiny synthetic EEG datamodule and a fast, quiet Lightning Trainer."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from cerebro.demo import SyntheticEEGDataModule

#: Tiny demo geometry. n_times must cover the demo's planted window (samples 80..120), see test_callback.py.
N_CHANS = 8
N_TIMES = 128


@pytest.fixture
def eeg_dm() -> SyntheticEEGDataModule:
    """64 train / 32 val / 32 test synthetic EEG windows of 8 channels x 128 samples, batches of 16."""
    return SyntheticEEGDataModule(n_train=64, n_val=32, n_test=32, n_chans=N_CHANS, n_times=N_TIMES, batch_size=16)


@pytest.fixture
def make_trainer(tmp_path):
    """Factory for a real CPU ``lightning.pytorch.Trainer`` rooted in ``tmp_path`` (no logger, no progress bar)."""

    def _make(callbacks=(), **overrides) -> pl.Trainer:
        kwargs = dict(
            default_root_dir=tmp_path,
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            num_sanity_val_steps=0,
        )
        kwargs.update(overrides)
        return pl.Trainer(callbacks=list(callbacks), **kwargs)

    return _make
