"""Shared fixtures for cerebro's tests: a tiny synthetic EEG datamodule and a fast, quiet Lightning Trainer."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch

from cerebro.demo import SyntheticEEGDataModule


def pytest_configure(config: pytest.Config) -> None:
    """``CEREBRO_TEST_THREADS=k`` runs the suite with ``torch.set_num_threads(k)``: results must not depend on it
    (float reductions split differently across threads), so the suite is also run that way."""
    threads = os.environ.get("CEREBRO_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = threads  # and the same in the subprocesses some tests start (DDP, CLI)


def pytest_report_header(config: pytest.Config) -> str:
    return f"cerebro tests: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"


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
