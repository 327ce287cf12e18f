"""Planted-signal localisation on trained real architectures: conv Grad-CAM on a ResNet-style 2-D CNN, token
Grad-CAM on a class-token ViT (image patches) and on a transformer over EEG tokens, IG and occlusion on images.

Each model is trained (a few seconds on CPU) to regress the amplitude of a signal planted in one fixed region; a
map localises when the region's share of its mean |attribution| is well above the region's share of the area.

Token Grad-CAM is taken at the first transformer block's input: after one attention block every token already
carries the planted amplitude (measured: the region's share falls to the area's share from layers.0's output on),
so deeper token maps show where information sits after mixing, not where it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.autopsy_helpers import autopsy, load_array
from tests.models import SmallResNet2d
from tests.test_tokens import EEGTokens, TinyViT

#: Images: a 4x4 blob at rows 4..8, columns 8..12 (exactly ViT patch (1, 2) of the 4x4 patch grid).
ROWS, COLS = slice(4, 8), slice(8, 12)
#: EEG tokens: channels 2..5, samples 24..32 (exactly token 3 of 8).
CHANS, TIMES = slice(2, 6), slice(24, 32)


def _images(n: int, chans: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, chans, 16, 16, generator=g) * 0.5
    amp = torch.rand(n, generator=g) * 2
    x[:, :, ROWS, COLS] += amp[:, None, None, None]
    return x, amp[:, None]


def _signals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, 64, generator=g) * 0.5
    amp = torch.rand(n, generator=g) * 2
    x[:, CHANS, TIMES] += amp[:, None, None] * torch.sin(torch.linspace(0, 3.14, 8))
    return x, amp[:, None]


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 3e-3) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    return model.eval()


def _r2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(1 - ((model(x) - y) ** 2).mean() / y.var())


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x, y = _images(512, 1, seed=0)
    torch.manual_seed(0)
    model = _train(SmallResNet2d(in_chans=1, n_classes=1), x, y, epochs=6)
    test = _images(16, 1, seed=1)
    assert _r2(model, *test) > 0.8
    return model, *test


@pytest.fixture(scope="module")
def vit() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x, y = _images(512, 3, seed=2)
    model = _train(TinyViT(n_classes=1), x, y, epochs=12)
    test = _images(16, 3, seed=3)
    assert _r2(model, *test) > 0.8
    return model, *test


def _image_share(maps: np.ndarray) -> float:
    a = np.abs(maps).mean(0).reshape(-1, 16, 16).sum(0)
    return float(a[ROWS, COLS].sum() / a.sum())


AREA = 16 / 256


@pytest.mark.parametrize("name", ["layer_gradcam", "integrated_gradients", "occlusion"])
def test_resnet_maps_find_the_planted_blob(tmp_path, resnet, name: str) -> None:
    model, x, y = resnet
    # Grad-CAM on the last residual block's output (pytorch-grad-cam's layer4[-1] for ResNets), positive evidence
    opts = {"occlusion": {"window": [1, 4, 4], "stride": [1, 2, 2]},
            "layer_gradcam": {"layer": "layer2", "relu": True}}.get(name, {})
    summary = autopsy(model, (x, y), tmp_path, [{name: opts}])
    rec = summary["diagnostics"][name]
    assert rec["status"] == "ok" and rec["flags"] == [], rec
    maps = load_array(tmp_path, name, "attributions")
    assert maps.shape[0] == 16 and maps.shape[-2:] == (16, 16)
    assert _image_share(maps) > 3 * AREA, (name, _image_share(maps))


def test_resnet_auto_layer_skips_the_shortcut_branch(tmp_path) -> None:
    """The 1x1 shortcut conv is registered after conv2 in the block; auto takes the main path's last conv."""
    summary = autopsy(SmallResNet2d(in_chans=1, n_classes=1).eval(), (torch.randn(2, 1, 16, 16),), tmp_path,
                      ["layer_gradcam"])
    assert summary["diagnostics"]["layer_gradcam"]["metrics"]["layer"] == "layer2.conv2"


@pytest.mark.parametrize("name", ["layer_gradcam", "attention_rollout", "integrated_gradients"])
def test_vit_token_maps_find_the_planted_patch(tmp_path, vit, name: str) -> None:
    model, x, y = vit
    opts = {"layer_gradcam": {"layer": "encoder.layers.0", "layer_input": True}}.get(name, {})
    summary = autopsy(model, (x, y), tmp_path, [{name: opts}])
    rec = summary["diagnostics"][name]
    assert rec["status"] == "ok" and rec["flags"] == [], rec
    if name == "layer_gradcam":
        assert (rec["metrics"]["layout"], rec["metrics"]["prefix_tokens"]) == ("tokens", 1)
    maps = load_array(tmp_path, name, "attributions")
    share = _image_share(maps)
    if name == "attention_rollout":  # target-independent: attention need not single out the patch; reported only
        assert maps.shape == (16, 1, 16, 16) and np.isfinite(maps).all()
        return
    assert share > 3 * AREA, (name, share)


def test_eeg_token_gradcam_finds_the_planted_token(tmp_path) -> None:
    x, y = _signals(512, seed=4)
    model = _train(EEGTokens(), x, y, epochs=10)
    tx, ty = _signals(16, seed=5)
    assert _r2(model, tx, ty) > 0.8
    summary = autopsy(model, (tx, ty), tmp_path, [{"layer_gradcam": {"layer": "block", "layer_input": True}},
                                                  "integrated_gradients"])
    cam = np.abs(load_array(tmp_path, "layer_gradcam", "attributions")).mean(0)[0]  # (64,) over time
    assert cam.shape == (64,)
    assert cam[TIMES].sum() / cam.sum() > 2 * (8 / 64), cam.round(3)
    ig = np.abs(load_array(tmp_path, "integrated_gradients", "attributions")).mean(0)  # (8, 64)
    assert ig[CHANS, TIMES].sum() / ig.sum() > 4 * (4 * 8) / (8 * 64)
    assert summary["diagnostics"]["layer_gradcam"]["metrics"]["token_grid"] == [8]
