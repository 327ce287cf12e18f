"""A small EEGNet-style regressor (temporal conv -> depthwise spatial conv -> temporal conv -> linear), output (B, 1)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

__all__ = ["EEGRegressor"]


class EEGRegressor(pl.LightningModule):
    """Response-time regression from ``(B, C, T)`` EEG windows, like the EEG Foundation Challenge's Challenge 1."""

    def __init__(self, n_chans: int = 16, n_times: int = 200, filters: int = 8, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, filters, (1, 11), padding=(0, 5), bias=False),
            nn.BatchNorm2d(filters),
            nn.Conv2d(filters, 2 * filters, (n_chans, 1), groups=filters, bias=False),
            nn.BatchNorm2d(2 * filters),
            nn.ELU(),
            nn.Conv2d(2 * filters, 2 * filters, (1, 9), padding=(0, 4)),
            nn.ELU(),
            nn.AvgPool2d((1, 4)),
            nn.Flatten(),
            nn.Linear(2 * filters * (n_times // 4), 1),
        )
        self.loss_fn = nn.MSELoss()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(1))

    def _step(self, batch: tuple[Tensor, ...] | dict[str, Tensor], name: str) -> Tensor:
        x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])
        loss = self.loss_fn(self(x), y)
        self.log(f"{name}_loss", loss, prog_bar=name == "val")
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
