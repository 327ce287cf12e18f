"""Classification on a real image data set that ships inside a package: scikit-learn's 8x8 handwritten digits.

A small CNN is trained with a real Lightning Trainer; the ModelAutopsy callback explains the predicted class with
the attribution family on the best checkpoint, and the maps must be where the ink is.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from tests.autopsy_helpers import load_array, load_summary

datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is in the test extra")

N = 48
METHODS = ["integrated_gradients", "saliency", "occlusion", "layer_gradcam"]


class DigitsCNN(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _i):  # noqa: ANN001, ANN201
        return self.loss_fn(self(batch[0]), batch[1])

    def validation_step(self, batch, _i):  # noqa: ANN001, ANN201
        self.log("val_loss", self.loss_fn(self(batch[0]), batch[1]))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, dict, torch.Tensor, DigitsCNN]:
    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    train, val = order[:1400], order[1400:]
    root = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    model = DigitsCNN()
    autopsy = ModelAutopsy(diagnostics=["predictions", *METHODS,
                                        {"sanity_checks": {"samples": 6, "layers": 3}}],
                           target={"kind": "classification", "class": "predicted"}, max_samples=N,
                           output_dir=root / "autopsy")
    trainer = pl.Trainer(default_root_dir=root, max_epochs=8, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ModelCheckpoint(monitor="val_loss"), autopsy])
    trainer.fit(model, DataLoader(TensorDataset(x[train], y[train]), batch_size=64, shuffle=True),
                DataLoader(TensorDataset(x[val], y[val]), batch_size=64))
    return root / "autopsy", load_summary(root / "autopsy"), x[val][:N], model


def test_digits_classifier_is_explained_with_every_method(digits_run) -> None:
    out, summary, _, model = digits_run
    statuses = {n: (r["status"], r["reason"]) for n, r in summary["diagnostics"].items()}
    assert all(s == "ok" for s, _ in statuses.values()), statuses
    assert summary["checkpoint"]["source"] == "best"
    assert summary["target"]["kind"] == "classification" and summary["samples"]["input_shape"] == [1, 8, 8]
    assert summary["diagnostics"]["predictions"]["metrics"]["accuracy"] > 0.85
    for name in METHODS:
        maps = load_array(out, name, "attributions")
        assert maps.shape[0] == N and maps.shape[-2:] == (8, 8), (name, maps.shape)
        assert np.isfinite(maps).all() and np.abs(maps).reshape(N, -1).max(1).min() > 0, name
        flags = summary["diagnostics"][name]["flags"]
        if name == "integrated_gradients":
            # A fixed number of steps need not bring every sample of a trained net within the 5% tolerance (one
            # of 48 missed it on another machine): the flag must then count exactly the samples it names, and
            # those must stay a small minority. Anything else (degenerate maps, ...) is still a failure.
            k = summary["diagnostics"][name]["metrics"]["not_converged"]
            assert k <= N // 10, (k, flags)
            assert len(flags) == (k > 0) and all(f.startswith(f"IG not converged on {k}/{N} samples") for f in flags)
        else:
            assert flags == [], name
    # the trained module is untouched: no hook left anywhere, still in training mode as Lightning left it
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_digit_maps_sit_on_the_ink(digits_run) -> None:
    out, _, x, _ = digits_run
    ink = (x[:, 0] > 0.25).numpy()  # (N, 8, 8)
    ig = load_array(out, "integrated_gradients", "attributions")[:, 0]
    assert np.abs(ig[x[:, 0].numpy() == 0]).max() == 0  # zero baseline: blank pixels get exactly nothing
    # (saliency is left out: a gradient is as large on blank pixels where ink would change the class)
    for name in ("occlusion", "layer_gradcam"):
        a = np.abs(load_array(out, name, "attributions")[:, 0])
        on_ink = (a * ink).sum() / ink.sum()
        off_ink = (a * ~ink).sum() / (~ink).sum()
        assert on_ink > 1.3 * off_ink, (name, on_ink, off_ink)


def test_sanity_checks_on_the_trained_classifier(digits_run) -> None:
    """Gradient maps depend on the model; zero-baseline maps (IG, occlusion) on digits are set by the blank pixels,
    which get exactly 0 whatever the weights (Adebayo et al. 2018 report the same): flagged, with the reason."""
    _, summary, _, _ = digits_run
    rec = summary["diagnostics"]["sanity_checks"]
    methods = rec["metrics"]["methods"]
    for name in ("saliency", "layer_gradcam"):
        assert methods[name]["model_randomization"] == "pass", (name, methods[name])
        assert methods[name]["target_randomization"] == "pass", (name, methods[name])
        assert len(methods[name]["spearman"]) == 3
    ig = methods["integrated_gradients"]
    assert ig["completeness"] == "pass" and ig["completeness_median_relative_error"] < 0.01
    assert ig["zero_fraction"] > 0.3
    if ig["model_randomization"] == "fail":
        assert any(f.startswith("sanity check failed: integrated_gradients maps barely change") and
                   "exactly 0 (input equal to the baseline)" in f for f in rec["flags"])
