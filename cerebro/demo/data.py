"""Synthetic EEG windows (channels x samples at 100 Hz) whose response time depends on a planted burst.

The planted effect: a 10 Hz burst on channels ``PLANTED_CHANNELS`` during samples ``PLANTED_WINDOW``; its amplitude
sets the response time. Everything else is noise, so a correct attribution concentrates there.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["make_eeg_dataset", "SyntheticEEGDataModule", "PLANTED_CHANNELS", "PLANTED_WINDOW"]

PLANTED_CHANNELS = (3, 4, 5)
PLANTED_WINDOW = (80, 120)


def make_eeg_dataset(n: int, n_chans: int = 16, n_times: int = 200, sfreq: float = 100.0, n_subjects: int = 4,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x (n, C, T) float32, y (n, 1) response times in s, subject (n,) int64)``."""
    if n_chans <= max(PLANTED_CHANNELS) or n_times < PLANTED_WINDOW[1]:
        raise ValueError(f"the planted effect needs n_chans > {max(PLANTED_CHANNELS)} and n_times >= "
                         f"{PLANTED_WINDOW[1]}, got n_chans={n_chans}, n_times={n_times}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_chans, n_times)).astype(np.float32) * 0.5
    amp = rng.uniform(0.0, 2.0, size=n).astype(np.float32)
    t = np.arange(n_times) / sfreq
    lo, hi = PLANTED_WINDOW
    burst = np.sin(2 * np.pi * 10.0 * t[lo:hi]) * np.hanning(hi - lo)
    for c in PLANTED_CHANNELS:
        x[:, c, lo:hi] += amp[:, None] * burst[None, :].astype(np.float32)
    subject = rng.integers(0, n_subjects, size=n)
    y = 0.4 + 0.5 * amp + 0.02 * rng.standard_normal(n).astype(np.float32) + 0.03 * subject
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).unsqueeze(1), torch.from_numpy(subject)


class _Named(Dataset):
    """``{"x", "y", "subject"}`` items: the autopsy reads the field names, so the report says "subject"."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, subject: torch.Tensor) -> None:
        self.x, self.y, self.subject = x, y, subject

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "subject": self.subject[i]}


class SyntheticEEGDataModule(pl.LightningDataModule):
    """Train/val/test splits of :func:`make_eeg_dataset`; batches are ``(x, y, subject)`` tuples, or dicts
    ``{"x", "y", "subject"}`` with ``named=True`` (the demo: the report then names the metadata field)."""

    def __init__(self, n_train: int = 512, n_val: int = 128, n_test: int = 128, n_chans: int = 16, n_times: int = 200,
                 batch_size: int = 32, seed: int = 0, named: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        kind = _Named if h.named else TensorDataset
        self.splits = {
            name: kind(*make_eeg_dataset(n, h.n_chans, h.n_times, seed=h.seed + i))
            for i, (name, n) in enumerate((("train", h.n_train), ("val", h.n_val), ("test", h.n_test)))
        }

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[name], batch_size=self.hparams.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
