"""attention_rollout (Abnar & Zuidema 2020): weights captured from the attention modules, rolled out, on the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution
from torch import nn

from cerebro.diagnostics.attention_rollout import AttentionRollout, rollout
from cerebro.errors import CerebroConfigError
from tests.autopsy_helpers import autopsy, load_array
from tests.models import TinyConv1d
from tests.test_tokens import EEGTokens, TinyViT


def _manual_rollout(weights: list[np.ndarray]) -> np.ndarray:
    joint = None
    for w in weights:
        a = w.mean(1)
        a = (a + np.eye(a.shape[-1])) / 2
        a = a / a.sum(-1, keepdims=True)
        joint = a if joint is None else a @ joint
    return joint


def test_vit_rollout_equals_the_paper_formula_on_the_real_attention_weights(tmp_path) -> None:
    model = TinyViT().eval()
    x = torch.randn(5, 3, 16, 16)
    summary = autopsy(model, (x,), tmp_path, ["attention_rollout"], target="classification")
    rec = summary["diagnostics"]["attention_rollout"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert m["attention_modules"] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert (m["heads"], m["prefix_tokens"], m["token_grid"], m["source"]) == (2, 1, [4, 4], "class_token")
    got = load_array(tmp_path, "attention_rollout", "attributions")
    assert got.shape == (5, 1, 16, 16)

    # independent computation: each block's input, through its own MultiheadAttention with per-head weights
    inputs: list[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for blk in model.encoder.layers]
    with torch.no_grad():
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            model(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
            for h in hooks:
                h.remove()
        weights = [blk.self_attn(t, t, t, need_weights=True, average_attn_weights=False)[1].double().numpy()
                   for blk, t in zip(model.encoder.layers, inputs)]
    joint = _manual_rollout(weights)
    cls_row = torch.from_numpy(joint[:, 0, 1:]).float().reshape(5, 1, 4, 4)
    expected = LayerAttribution.interpolate(cls_row, (16, 16), interpolate_mode="bilinear").numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.ptp(got.reshape(5, -1), axis=1).min() > 0  # a real map, not a constant
    # nothing left behind: the fused fast path is back on and no hook remains
    assert torch.backends.mha.get_fastpath_enabled()
    for blk in model.encoder.layers:
        assert not blk.self_attn._forward_pre_hooks and not blk.self_attn._forward_hooks


class _TimmAttention(nn.Module):
    """timm-style attention: explicit softmax, probabilities passed through ``attn_drop``; a bias on the logits
    makes every query attend to key token ``focus``."""

    def __init__(self, dim: int, heads: int, focus: int, n_tokens: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, dim * 3), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.0)
        bias = torch.zeros(n_tokens)
        bias[focus] = 8.0
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + self.bias).softmax(-1)
        attn = self.attn_drop(attn)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class TimmStyleViT(nn.Module):
    """Class token + 4x4 patches of (1, 16, 16) images; two blocks of explicit attention."""

    def __init__(self, focus_patch: int = 6) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.patch = nn.Conv2d(1, 16, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.blocks = nn.ModuleList([_TimmAttention(16, 2, 1 + focus_patch, 17) for _ in range(2)])
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.patch(x).flatten(2).transpose(1, 2)], 1)
        for blk in self.blocks:
            t = t + blk(t)
        return self.head(t[:, 0])


def test_timm_style_attention_is_found_by_its_attn_drop_and_localises_the_attended_patch(tmp_path) -> None:
    model = TimmStyleViT(focus_patch=6).eval()  # patch 6 = row 1, column 2 of the 4x4 grid
    summary = autopsy(model, (torch.randn(4, 1, 16, 16),), tmp_path, ["attention_rollout"], target="classification")
    rec = summary["diagnostics"]["attention_rollout"]
    assert rec["status"] == "ok", rec["reason"]
    assert rec["metrics"]["attention_modules"] == ["blocks.0.attn_drop", "blocks.1.attn_drop"]
    maps = load_array(tmp_path, "attention_rollout", "attributions")[:, 0]
    cell = maps.reshape(4, 4, 4, 4, 4).mean(axis=(2, 4))  # (sample, grid row, grid col)
    assert all(np.unravel_index(c.argmax(), c.shape) == (1, 2) for c in cell)
    share = cell[:, 1, 2] / cell.sum(axis=(1, 2))
    assert share.min() > 4 / 16  # well above the patch's 1/16 of the area


def test_signal_tokens_without_class_token_use_the_mean_row(tmp_path) -> None:
    summary = autopsy(EEGTokens().eval(), (torch.randn(4, 8, 64), torch.randn(4, 1)), tmp_path,
                      ["attention_rollout"])
    m = summary["diagnostics"]["attention_rollout"]["metrics"]
    assert (m["source"], m["prefix_tokens"], m["token_grid"], m["map_shape"]) == ("mean", 0, [8], [1, 64])
    maps = load_array(tmp_path, "attention_rollout", "attributions")
    assert maps.shape == (4, 1, 64) and np.isfinite(maps).all()


def test_model_without_attention_is_reported_before_any_data_work(tmp_path) -> None:
    diag = AttentionRollout()
    with pytest.raises(CerebroConfigError, match="no nn.MultiheadAttention and no module named \\*attn_drop"):
        diag.check_model(TinyConv1d())
    summary = autopsy(TinyConv1d().eval(), (torch.randn(4, 4, 32), torch.randn(4, 1)), tmp_path,
                      ["attention_rollout", "predictions"])
    assert summary["diagnostics"]["attention_rollout"]["status"] == "failed"
    assert "attention_rollout.modules" in summary["diagnostics"]["attention_rollout"]["reason"]
    assert summary["diagnostics"]["predictions"]["status"] == "ok"


def test_named_module_without_weights_is_reported_not_a_map(tmp_path) -> None:
    summary = autopsy(TinyViT().eval(), (torch.randn(3, 3, 16, 16),), tmp_path,
                      [{"attention_rollout": {"modules": ["head"]}}], target="classification")
    rec = summary["diagnostics"]["attention_rollout"]
    assert rec["status"] == "failed"
    assert "['head'] returned no (B, heads, N, N) attention weights" in rec["reason"]
    assert not (tmp_path / "arrays" / "attention_rollout" / "attributions.npy").exists()


def test_option_mistakes_fail_at_construction() -> None:
    with pytest.raises(CerebroConfigError, match="discard_ratio` must be in \\[0, 1\\)"):
        AttentionRollout(discard_ratio=1.0)
    with pytest.raises(CerebroConfigError, match="mean"):
        AttentionRollout(head_fusion="avg")


def test_rollout_function() -> None:
    eye = torch.eye(3).expand(2, 4, 3, 3)
    # exact by construction: identities stay identities (rows already sum to 1, (I + I) / 2 = I) in any arithmetic
    np.testing.assert_allclose(rollout([eye, eye]).numpy(), np.eye(3)[None].repeat(2, 0))
    a, b = torch.rand(1, 1, 3, 3), torch.rand(1, 1, 3, 3)
    na, nb = a[:, 0] / a[:, 0].sum(-1, keepdim=True), b[:, 0] / b[:, 0].sum(-1, keepdim=True)
    # the references normalise and multiply in float32 (~12 roundings of 6e-8 on positive terms, no cancellation)
    np.testing.assert_allclose(rollout([a, b], residual=False).numpy(), (nb @ na).double().numpy(), rtol=2e-6)
    two_heads = torch.stack([a[:, 0], b[:, 0]], 1)
    mx = rollout([two_heads], head_fusion="max", residual=False)
    m = torch.maximum(a[:, 0], b[:, 0])
    np.testing.assert_allclose(mx.numpy(), (m / m.sum(-1, keepdim=True)).double().numpy(), rtol=2e-6)
    kept = rollout([a], discard_ratio=0.5, residual=False)
    assert int((kept == 0).sum()) == 4  # int(9 * 0.5) weakest weights dropped


def test_transformer_config_runs_on_a_vit(tmp_path) -> None:
    """configs/autopsy/transformer.yaml, composed with real Hydra, runs every diagnostic on a class-token ViT."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cerebro import run_autopsy
    from cerebro.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="demo", overrides=["autopsy=transformer",
                                                     "++autopsy.diagnostics.integrated_gradients.n_steps=4",
                                                     "++autopsy.diagnostics.sanity_checks.samples=3"])
    cb = instantiate(cfg.autopsy)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 3, (6,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    summary = run_autopsy(TinyViT().eval(), loader, diagnostics=cb.config.diagnostics, target=cb.config.target,
                          output_dir=tmp_path, max_samples=6)
    statuses = {n: (r["status"], r["reason"]) for n, r in summary["diagnostics"].items()}
    assert all(s == "ok" for s, _ in statuses.values()), statuses
    assert summary["target"]["kind"] == "classification"
    assert load_array(tmp_path, "attention_rollout", "attributions").shape == (6, 1, 16, 16)
    methods = summary["diagnostics"]["sanity_checks"]["metrics"]["methods"]
    assert set(methods) == {"integrated_gradients", "layer_gradcam", "attention_rollout"}
    rollout_check = methods["attention_rollout"]
    assert len(rollout_check["spearman"]) == len(rollout_check["randomized_layers"]) > 0
    # rollout is the same for every class: target randomization does not apply, and is not flagged as a failure
    assert rollout_check["target_randomization"].startswith("not applicable")
    assert methods["layer_gradcam"]["target_randomization"] in ("pass", "fail")
    assert not any("attention_rollout maps of another class" in f
                   for f in summary["diagnostics"]["sanity_checks"]["flags"])
