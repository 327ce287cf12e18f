"""The autopsy works on a private copy: the caller's module keeps its weights, buffers, train/eval modes,
requires_grad flags, device, gradients and hooks, whether the autopsy runs from ``run_autopsy`` or from the callback,
and even when the module's forward rewrites its own weights (braindecode's max-norm constraint)."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn
from torch.nn.modules import module as nn_module
from torch.utils.data import DataLoader, TensorDataset

import cerebro
from cerebro import ModelAutopsy
from cerebro.demo import EEGRegressor, make_eeg_dataset

N_CHANS, N_TIMES = 8, 128  # same geometry as the `eeg_dm` fixture in conftest.py
N = 16
ALL_SIX = ["predictions", "gradients", "activations", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
           "layer_gradcam"]
FROZEN = "net.0.weight"
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
               "_load_state_dict_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


# -- helpers ------------------------------------------------------------------------------------------------------
def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything the autopsy must leave alone, copied."""
    tensors = dict(chain(model.named_parameters(), model.named_buffers()))
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "objects": {k: id(v) for k, v in tensors.items()},  # same Parameter/buffer objects, not replacements
        "versions": {k: v._version for k, v in tensors.items()},  # no in-place writes either
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "device": {k: v.device for k, v in tensors.items()},
        "dtype": {k: v.dtype for k, v in tensors.items()},
        "grad_is_none": {n: p.grad is None for n, p in model.named_parameters()},
    }


def hooks_left(model: nn.Module) -> dict[str, int]:
    """Non-empty hook dictionaries of every submodule, plus torch's global module hooks."""
    left = {f"{name or '<root>'}.{attr}": len(getattr(m, attr))
            for name, m in model.named_modules() for attr in _HOOK_DICTS if getattr(m, attr, None)}
    left.update({g: len(getattr(nn_module, g)) for g in _GLOBAL_HOOKS if getattr(nn_module, g, None)})
    return left


def assert_untouched(model: nn.Module, before: dict[str, Any], hooks_before: dict[str, int]) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    changed = [k for k, v in before["state"].items() if not torch.equal(v, after["state"][k])]  # untouched = same bits
    assert changed == [], f"the autopsy changed the caller's tensors: {changed}"
    for key in ("objects", "versions", "training", "requires_grad", "device", "dtype", "grad_is_none"):
        assert after[key] == before[key], key
    assert hooks_left(model) == hooks_before


def eeg_loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    x, y, subject = make_eeg_dataset(n, N_CHANS, N_TIMES, seed=1)
    return DataLoader(TensorDataset(x, y, subject), batch_size=batch_size)


def train_mode_model_with_frozen_param() -> EEGRegressor:
    pl.seed_everything(0, verbose=False)
    model = EEGRegressor(n_chans=N_CHANS, n_times=N_TIMES)
    # Non-default BatchNorm statistics, so a stray train-mode forward on the original would show up.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.get_parameter(FROZEN).requires_grad_(False)
    model.train()
    return model


# -- run_autopsy --------------------------------------------------------------------------------------------------
def test_run_autopsy_leaves_train_mode_model_untouched(tmp_path: Path) -> None:
    model = train_mode_model_with_frozen_param()
    before = snapshot(model)
    assert all(before["training"].values())
    assert before["requires_grad"][FROZEN] is False
    assert sum(not v for v in before["requires_grad"].values()) == 1
    assert hooks_left(model) == {}

    summary = cerebro.run_autopsy(model, eeg_loader(), diagnostics=ALL_SIX, output_dir=tmp_path, max_samples=N)

    # The autopsy really ran everything (on a copy in eval mode) ...
    assert summary["status"] == "ok", summary["reason"]
    assert {n: r["status"] for n, r in summary["diagnostics"].items()} == {
        "predictions": "ok", "gradients": "ok", "activations": "ok", "failure_modes": "ok",
        "integrated_gradients": "ok", "layer_gradcam": "ok"}
    grads = summary["diagnostics"]["gradients"]["metrics"]
    assert grads["frozen_parameters"] == 1 and FROZEN not in grads["per_parameter"]
    # ... in eval mode: its predictions are the eval-mode predictions of the unchanged weights.
    reference = EEGRegressor(n_chans=N_CHANS, n_times=N_TIMES)
    reference.load_state_dict(before["state"])
    reference.eval()
    x = next(iter(eeg_loader(batch_size=N)))[0]
    with torch.no_grad():
        expected = reference(x)[:, 0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "arrays" / "predictions" / "predictions.npy"), expected, atol=1e-5)

    # ... and the caller's module is exactly as it was.
    assert_untouched(model, before, {})
    assert model.training and all(m.training for m in model.modules())
    assert model.get_parameter(FROZEN).requires_grad is False
    assert all(p.grad is None for p in model.parameters())


# -- the callback at fit end --------------------------------------------------------------------------------------
class _Regressor(EEGRegressor):
    """Demo regressor with ``net.0.weight`` frozen; val_loss gets +1 per epoch, so the best checkpoint (epoch 0)
    holds other weights than the live module, and loading it into the live module would be visible."""

    def __init__(self) -> None:
        super().__init__(n_chans=N_CHANS, n_times=N_TIMES)
        self.get_parameter(FROZEN).requires_grad_(False)

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        loss = self.loss_fn(self(batch[0]), batch[1]) + float(self.current_epoch)
        self.log("val_loss", loss)
        return loss


class _Probe(Callback):
    """Snapshots the module in ``on_fit_end``; placed right before and right after ModelAutopsy."""

    def __init__(self) -> None:
        self.snap: dict[str, Any] | None = None
        self.hooks: dict[str, int] | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.snap = snapshot(pl_module)
        self.hooks = hooks_left(pl_module)


def test_callback_at_fit_end_leaves_module_untouched(eeg_dm, make_trainer, tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    model = _Regressor()
    frozen_init = model.get_parameter(FROZEN).detach().clone()
    pre, post = _Probe(), _Probe()
    autopsy = ModelAutopsy(diagnostics=ALL_SIX, max_samples=N)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = make_trainer([pre, autopsy, post, ckpt], max_epochs=2)
    trainer.fit(model, datamodule=eeg_dm)

    summary = autopsy.last_summary
    assert summary is not None and summary["status"] == "ok", summary and summary["reason"]
    assert summary["checkpoint"]["source"] == "best"
    assert Path(summary["checkpoint"]["path"]).name.startswith("epoch=0-")
    assert all(r["status"] == "ok" for r in summary["diagnostics"].values())

    assert pre.snap is not None and post.snap is not None
    assert all(pre.snap["training"].values())  # Lightning hands the module over in train mode
    assert pre.snap["requires_grad"][FROZEN] is False
    assert pre.hooks == {}
    assert_untouched(model, pre.snap, pre.hooks)  # the autopsy's copy and checkpoint loading never leaked back
    # Sanity: the live module holds the last weights, which differ from the best checkpoint the autopsy loaded.
    best_state = torch.load(summary["checkpoint"]["path"], map_location="cpu", weights_only=True)["state_dict"]
    assert not torch.equal(best_state["net.9.weight"], model.get_parameter("net.9.weight").detach())
    assert torch.equal(model.get_parameter(FROZEN).detach(), frozen_init)
    assert model.device == torch.device("cpu") and all(p.device.type == "cpu" for p in model.parameters())


# -- a forward that mutates its own weights -----------------------------------------------------------------------
class MaxNormLinear(nn.Linear):
    """braindecode's ``LinearWithConstraint``: renorms its weight rows to ``max_norm`` in every forward."""

    def __init__(self, *args: Any, max_norm: float = 0.25, **kwargs: Any) -> None:
        self.max_norm = max_norm
        super().__init__(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        self.weight.data = torch.renorm(self.weight.data, p=2, dim=0, maxnorm=self.max_norm)
        return super().forward(x)


class MaxNormNet(nn.Module):
    """``(B, C, T) -> (B, 1)``: Conv1d -> ELU -> flatten -> max-norm linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(N_CHANS, 4, kernel_size=5, padding=2)
        self.act = nn.ELU()
        self.flatten = nn.Flatten()
        self.head = MaxNormLinear(4 * N_TIMES, 1, max_norm=0.25)
        with torch.no_grad():
            self.head.weight.mul_(50.0)  # well above the max norm: the first forward must rewrite it

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(self.act(self.conv(x))))


def test_weight_mutating_forward_leaves_caller_weights_untouched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MaxNormNet().train()
    before = snapshot(model)
    # Precondition: a forward on a copy really rewrites the head's weights.
    probe = MaxNormNet()
    probe.load_state_dict(before["state"])
    probe(torch.zeros(1, N_CHANS, N_TIMES))
    assert not torch.equal(probe.head.weight, before["state"]["head.weight"])
    assert float(probe.head.weight.detach().norm()) == pytest.approx(0.25, rel=1e-4)
    assert float(before["state"]["head.weight"].norm()) > 1.0

    summary = cerebro.run_autopsy(model, eeg_loader(), diagnostics=ALL_SIX, output_dir=tmp_path, max_samples=N)

    assert summary["status"] == "ok", summary["reason"]
    assert summary["diagnostics"]["layer_gradcam"]["metrics"]["layer"] == "conv"
    assert_untouched(model, before, {})
    assert float(model.head.weight.detach().norm()) > 1.0  # still the caller's un-renormed weights
