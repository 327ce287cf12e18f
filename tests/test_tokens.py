"""Grad-CAM on transformer token layers: (B, N, D) tokens become a spatial map (class tokens dropped), never zeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cerebro.diagnostics.layer_gradcam import token_grid
from cerebro.errors import CerebroConfigError
from tests.autopsy_helpers import autopsy, load_array


class TinyViT(nn.Module):
    """ViT-style classifier from torch.nn.TransformerEncoderLayer: 4x4 patches of a (3, 16, 16) image, a class token."""

    def __init__(self, dim: int = 16, n_classes: int = 3, with_aux: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.aux = nn.Linear(dim, dim) if with_aux else None
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        tokens = self.encoder(tokens)
        if self.aux is not None:
            self.aux(tokens)  # computed and thrown away: disconnected from the output
        return self.head(tokens[:, 0])


class EEGTokens(nn.Module):
    """A transformer over EEG tokens: 8-sample patches of (8, 64) windows -> 8 tokens, mean-pooled regression."""

    def __init__(self, n_chans: int = 8, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv1d(n_chans, dim, kernel_size=8, stride=8)
        self.block = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(x).transpose(1, 2)).mean(dim=1))


def _manual_token_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, score, prefix: int, grid,  # noqa: ANN001
                      use_input: bool = False) -> torch.Tensor:
    held = []
    h = layer.register_forward_hook(lambda m, i, o: held.append(i[0] if use_input else o))
    try:
        s = score(model(x))
    finally:
        h.remove()
    (g,) = torch.autograd.grad(s.sum(), held[0])
    a = held[0][:, prefix:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
    g = g[:, prefix:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
    return (g.mean(dim=tuple(range(2, g.ndim)), keepdim=True) * a).sum(1, keepdim=True)


def test_vit_auto_layer_drops_the_class_token_and_maps_onto_the_image(tmp_path) -> None:
    model = TinyViT().eval()
    x = torch.randn(5, 3, 16, 16)
    summary = autopsy(model, (x,), tmp_path, ["layer_gradcam"], target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    # auto takes the first block's input: the patch tokens before any attention mixing (measured on HF and timm
    # ViTs in tests/test_adapters_transformers.py: they localise a planted patch where later blocks do not)
    assert m["layer"] == "encoder.layers.0" and m["layout"] == "tokens"
    assert m["layer_input"] is True and "first transformer block's input" in m["layer_notes"][0]
    assert m["prefix_tokens"] == 1 and m["token_grid"] == [4, 4] and m["layer_map_shape"] == [1, 4, 4]
    cam = load_array(tmp_path, "layer_gradcam", "attributions")
    assert cam.shape == (5, 1, 16, 16) and rec["flags"] == []
    with torch.no_grad():
        pred = model(x).argmax(1)
    raw = _manual_token_cam(model, model.encoder.layers[0], x, lambda o: o.gather(1, pred[:, None])[:, 0], 1, (4, 4),
                            use_input=True)
    from captum.attr import LayerAttribution

    expected = LayerAttribution.interpolate(raw.detach(), (16, 16), interpolate_mode="bilinear")
    np.testing.assert_allclose(cam, expected.numpy(), atol=1e-5)
    assert np.abs(cam).reshape(5, -1).max(1).min() > 0


def test_eeg_token_transformer_maps_onto_time(tmp_path) -> None:
    model = EEGTokens().eval()
    x = torch.randn(4, 8, 64)
    summary = autopsy(model, (x, torch.randn(4, 1)), tmp_path, ["layer_gradcam"])
    m = summary["diagnostics"]["layer_gradcam"]["metrics"]
    assert m["layer"] == "block" and m["prefix_tokens"] == 0 and m["token_grid"] == [8]
    cam = load_array(tmp_path, "layer_gradcam", "attributions")
    assert cam.shape == (4, 1, 64)
    assert m["layer_input"] is True  # auto: the first (here only) block's input, the tokens before attention
    raw = _manual_token_cam(model, model.block, x, lambda o: o[:, 0], 0, (8,), use_input=True)
    from captum.attr import LayerAttribution

    np.testing.assert_allclose(cam, LayerAttribution.interpolate(raw.detach(), (64,), "linear").numpy(), atol=1e-5)


def test_layer_off_the_output_path_is_reported_not_zeros(tmp_path) -> None:
    model = TinyViT(with_aux=True).eval()
    with pytest.warns(UserWarning, match="disconnected"):
        summary = autopsy(model, (torch.randn(3, 3, 16, 16),), tmp_path, [{"layer_gradcam": {"layer": "aux"}}],
                          target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "failed"
    assert "layer 'aux' is disconnected from the output" in rec["reason"]
    assert not (tmp_path / "arrays" / "layer_gradcam" / "attributions.npy").exists()


def test_head_layer_without_tokens_is_reported(tmp_path) -> None:
    summary = autopsy(TinyViT().eval(), (torch.randn(3, 3, 16, 16),), tmp_path, [{"layer_gradcam": {"layer": "head"}}],
                      target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "failed" and "which has no spatial or token axis" in rec["reason"]
    assert "encoder.layers.1" in rec["reason"]  # candidates are listed


def test_explicit_grid_and_prefix(tmp_path) -> None:
    model = TinyViT().eval()
    x = torch.randn(2, 3, 16, 16)
    ok = autopsy(model, (x,), tmp_path / "ok", [{"layer_gradcam": {"prefix_tokens": 1, "grid": [2, 8]}}],
                 target="classification")
    assert ok["diagnostics"]["layer_gradcam"]["metrics"]["token_grid"] == [2, 8]
    bad = autopsy(model, (x,), tmp_path / "bad", [{"layer_gradcam": {"prefix_tokens": 0, "grid": [4, 4]}}],
                  target="classification")
    assert "17 tokens minus 0 prefix tokens = 17 cannot form the grid [4, 4]" in \
        bad["diagnostics"]["layer_gradcam"]["reason"]


@pytest.mark.parametrize(
    ("n", "shape", "prefix", "grid", "declared", "expected"),
    [
        (197, (3, 224, 224), None, None, 1, (1, (14, 14))),
        (196, (3, 224, 224), None, None, 0, (0, (14, 14))),
        (201, (3, 224, 224), None, None, 5, (5, (14, 14))),  # class + 4 register tokens
        (25, (129, 200), None, None, 0, (0, (25,))),
        (26, (129, 200), None, None, 1, (1, (25,))),
        (26, (129, 200), 1, [5, 5], 0, (1, (5, 5))),
    ],
)
def test_token_grid_inference(n, shape, prefix, grid, declared, expected) -> None:  # noqa: ANN001
    assert token_grid(n, shape, prefix, grid, declared) == expected


def test_token_grid_that_cannot_be_square_asks_for_options() -> None:
    with pytest.raises(CerebroConfigError, match="set layer_gradcam.grid and prefix_tokens"):
        token_grid(60, (3, 32, 32), None, None, 0)


def test_last_block_output_of_a_class_token_model_moves_to_its_input(tmp_path) -> None:
    """Named explicitly, the last block's output carries no patch-token gradient (class-token readout): the map is
    taken at the block's input, with a note saying why, never a zero map with status ok."""
    summary = autopsy(TinyViT().eval(), (torch.randn(3, 3, 16, 16),), tmp_path,
                      [{"layer_gradcam": {"layer": "encoder.layers.1"}}], target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "ok" and rec["metrics"]["layer_input"] is True, rec
    assert "only its class token reaches the output" in rec["metrics"]["layer_notes"][0]
    assert "layer_input: true" in rec["metrics"]["layer_notes"][0]
    assert not any("degenerate" in f for f in rec["flags"])
    cam = load_array(tmp_path, "layer_gradcam", "attributions")
    assert np.ptp(cam.reshape(3, -1), axis=1).min() > 0
