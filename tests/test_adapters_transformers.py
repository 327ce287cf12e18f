"""Seed 003 on real transformers: Hugging Face ``ViTForImageClassification`` and ``timm`` ViT (random weights, tiny
sizes), and a BERT-style text classifier on token ids.

* ``cerebro.adapters`` finds the token blocks, class tokens and attention modules of each family, switches the
  model to weight-exposing attention for one pass (HF: eager + ``output_attentions``; timm: ``fused_attn = False``)
  and restores it.
* ``attention_rollout`` with default options equals a hand rollout of weights captured independently, under the
  default SDPA / fused attention as well as under eager / unfused attention.
* ``layer_gradcam`` on any named block computes and draws a token map; a block whose patch tokens do not reach
  the output (class-token readout) moves to its input with a note; ``layer: auto`` picks the first block's input.
* ``(B, T, D)`` layers of a BERT model are laid out as tokens (per-token maps equal Captum's LayerIntegratedGradients
  summed over D); a layout that cannot be decided is an error naming ``layout:``.
* ``configs/autopsy/transformer.yaml`` runs inside a real Lightning Trainer on both ViTs.
"""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerIntegratedGradients
from torch import nn

from cerebro import adapters
from cerebro.adapters.hf import HuggingFace
from cerebro.adapters.timm import Timm
from tests.autopsy_helpers import autopsy, load_array

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")


def hf_vit(num_labels: int = 3, image: int = 32, attn: str | None = None) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=image, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    if attn is not None:
        cfg._attn_implementation = attn
    return transformers.ViTForImageClassification(cfg).eval()


def timm_vit(num_classes: int = 3, image: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=image, patch_size=4, depth=2,
                             embed_dim=32, num_heads=2, num_classes=num_classes).eval()


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _attn_settings(model: nn.Module) -> list:
    return [(c._attn_implementation, c.output_attentions) for c in adapters.hf.hf_configs(model)] + \
        [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


# -- adapters -----------------------------------------------------------------------------------------------------
def test_adapters_know_blocks_class_tokens_widths_and_attention() -> None:
    hf, tm = hf_vit(), timm_vit()
    blocks = adapters.token_blocks(hf)
    assert len(blocks) == 2 and blocks[1].endswith(".1") and "embeddings" not in blocks[0]  # vit.layers.N (5.x)
    assert (adapters.prefix_tokens(hf), adapters.hidden_sizes(hf)) == (1, {32})
    assert len(adapters.attention_modules(hf)) >= 2
    assert adapters.token_blocks(tm) == ["blocks.0", "blocks.1"]
    assert (adapters.prefix_tokens(tm), adapters.hidden_sizes(tm)) == (1, {32})
    assert list(adapters.attention_modules(tm)) == ["blocks.0.attn.attn_drop", "blocks.1.attn.attn_drop"]
    assert [type(a).__name__ for a in adapters.adapters_for(hf)] == ["HuggingFace"]
    assert [type(a).__name__ for a in adapters.adapters_for(tm)] == ["Timm", "TorchTransformer"]  # attn_drop names


@pytest.mark.parametrize("kind", ["hf", "timm"])
def test_attention_pass_switches_and_restores(kind: str) -> None:
    model = hf_vit() if kind == "hf" else timm_vit()
    before = _attn_settings(model)
    assert before[0] in (("sdpa", False), True)  # the defaults: SDPA / fused kernels, which expose no weights
    with adapters.attention_pass(model):
        inside = _attn_settings(model)
        assert all(s == ("eager", True) for s in inside) if kind == "hf" else not any(inside)
    assert _attn_settings(model) == before
    with pytest.raises(RuntimeError, match="boom"), adapters.attention_pass(model):
        raise RuntimeError("boom")
    assert _attn_settings(model) == before  # restored whatever happens


# -- attention rollout --------------------------------------------------------------------------------------------
def _hand_rollout(weights: list[np.ndarray]) -> np.ndarray:
    joint = None
    for w in weights:
        a = w.mean(1)
        a = (a + np.eye(a.shape[-1])) / 2
        a = a / a.sum(-1, keepdims=True)
        joint = a if joint is None else a @ joint
    return joint


def _hf_weights(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        return [a.double().numpy() for a in eager(x, output_attentions=True).attentions]


def _timm_weights(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """softmax(q k^T / sqrt(d)) from each block's own qkv projection: independent of timm's attention code path."""
    inputs: list[torch.Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for blk, t in zip(model.blocks, inputs):
        a = blk.attn
        qkv = a.qkv(t).reshape(t.shape[0], t.shape[1], 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
        out.append(torch.softmax(q @ k.transpose(-2, -1) * a.scale, dim=-1).double().detach().numpy())
    return out


@pytest.mark.parametrize("case", ["hf-sdpa", "hf-eager", "timm-fused", "timm-unfused"])
def test_rollout_with_default_options_equals_a_hand_rollout(tmp_path, case: str) -> None:
    kind, attn = case.split("-")
    model = hf_vit(attn="eager" if attn == "eager" else None) if kind == "hf" else timm_vit()
    if attn == "unfused":
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    before = _attn_settings(model)
    x = torch.randn(4, 3, 32, 32)
    summary = autopsy(model, (x,), tmp_path, ["attention_rollout"], target="classification")
    rec = summary["diagnostics"]["attention_rollout"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert (m["attention_layers"], m["heads"], m["prefix_tokens"], m["token_grid"], m["source"]) == \
        (2, 2, 1, [8, 8], "class_token")
    got = load_array(tmp_path, "attention_rollout", "attributions")
    weights = _hf_weights(model, x) if kind == "hf" else _timm_weights(model, x)
    cls_row = torch.from_numpy(_hand_rollout(weights)[:, 0, 1:]).float().reshape(4, 1, 8, 8)
    expected = LayerAttribution.interpolate(cls_row, (32, 32), interpolate_mode="bilinear").numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.ptp(got.reshape(4, -1), axis=1).min() > 0
    assert _attn_settings(model) == before and _no_hooks(model)


@pytest.mark.parametrize(("kind", "fix"), [("hf", 'attn_implementation="eager"'), ("timm", "fused_attn")])
def test_rollout_without_obtainable_weights_names_the_fix(tmp_path, monkeypatch, kind: str, fix: str) -> None:
    # fault injection: the family's switch to weight-exposing attention does nothing
    monkeypatch.setattr(HuggingFace if kind == "hf" else Timm, "attention_pass", lambda self, model: nullcontext())
    model = hf_vit() if kind == "hf" else timm_vit()
    summary = autopsy(model, (torch.randn(2, 3, 32, 32),), tmp_path, ["attention_rollout"], target="classification")
    rec = summary["diagnostics"]["attention_rollout"]
    assert rec["status"] == "failed" and fix in rec["reason"], rec["reason"]
    assert not (tmp_path / "arrays" / "attention_rollout" / "attributions.npy").exists()


# -- Grad-CAM on token blocks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hf", "timm"])
def test_named_blocks_compute_and_draw_token_maps(tmp_path, kind: str) -> None:
    model = hf_vit() if kind == "hf" else timm_vit()
    blocks = adapters.token_blocks(model)
    x = torch.randn(3, 3, 32, 32)
    for i, (layer, use_input) in enumerate([(blocks[0], False), (blocks[0], True), (blocks[1], False)]):
        out = tmp_path / str(i)
        summary = autopsy(model, (x,), out, [{"layer_gradcam": {"layer": layer, "layer_input": use_input}}],
                          target="classification")
        rec = summary["diagnostics"]["layer_gradcam"]
        assert rec["status"] == "ok", rec["reason"]
        m = rec["metrics"]
        assert (m["layer"], m["layout"], m["prefix_tokens"], m["token_grid"]) == (layer, "tokens", 1, [8, 8])
        assert m["layer_map_shape"] == [1, 8, 8] and m["map_shape"] == [1, 32, 32]
        cam = load_array(out, "layer_gradcam", "attributions")
        assert cam.shape == (3, 1, 32, 32) and np.isfinite(cam).all()
        assert np.ptp(cam.reshape(3, -1), axis=1).min() > 1e-4 * np.abs(cam).max()
        assert not any("degenerate" in f for f in rec["flags"]), rec["flags"]
        assert any(p.name.startswith("layer_gradcam") for p in (out / "figures").glob("*.png"))
        if layer == blocks[1]:  # class-token readout: only the class token of the last block reaches the head
            assert m["layer_input"] is True and "only its class token reaches the output" in m["layer_notes"][0]
    assert _no_hooks(model)


def test_hf_model_output_is_read_through_its_logits(tmp_path) -> None:
    summary = autopsy(hf_vit(), (torch.randn(2, 3, 32, 32),), tmp_path, ["predictions"], target="classification")
    assert summary["diagnostics"]["predictions"]["status"] == "ok"
    assert summary["target"]["output_key"].startswith("logits (read from the ImageClassifierOutput")


# -- layer: auto localises a planted patch ------------------------------------------------------------------------
ROWS, COLS = slice(4, 8), slice(8, 12)  # patch (1, 2) of the 4x4 grid of a 16x16 image
AREA = 16 / 256


def _planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5
    amp = torch.rand(n, generator=g) * 2
    x[:, :, ROWS, COLS] += amp[:, None, None, None]
    return x, amp[:, None]


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out.logits


def _share(maps: np.ndarray) -> float:
    a = np.abs(maps).mean(0).reshape(16, 16)
    return float(a[ROWS, COLS].sum() / a.sum())


@pytest.mark.parametrize("kind", ["hf", "timm"])
def test_auto_layer_is_the_first_block_input_and_localises_the_planted_patch(tmp_path, kind: str) -> None:
    model = Logits(hf_vit(1, image=16) if kind == "hf" else timm_vit(1, image=16))
    x, y = _planted(384, seed=0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(10):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    model.eval()
    tx, ty = _planted(16, seed=1)
    with torch.no_grad():
        assert float(1 - ((model(tx) - ty) ** 2).mean() / ty.var()) > 0.8
    blocks = adapters.token_blocks(model)
    auto = autopsy(model, (tx, ty), tmp_path / "auto", ["layer_gradcam"])["diagnostics"]["layer_gradcam"]
    assert (auto["metrics"]["layer"], auto["metrics"]["layer_input"]) == (blocks[0], True)
    late = autopsy(model, (tx, ty), tmp_path / "late", [{"layer_gradcam": {"layer": blocks[0]}}])
    auto_share = _share(load_array(tmp_path / "auto", "layer_gradcam", "attributions"))
    late_share = _share(load_array(tmp_path / "late", "layer_gradcam", "attributions"))
    assert late["diagnostics"]["layer_gradcam"]["status"] == "ok"
    # measured at 32x32 (8x8 grid): the first block's input localises (HF 0.034, timm 0.052 vs area 0.016) and the
    # first block's output does not (0.009, 0.006). At this 4x4 grid timm's block-0 output localised too (0.19 vs
    # 0.13 at the input), so only the input's localisation is asserted here; HF must keep the measured order.
    assert auto_share > 2 * AREA, (auto_share, late_share)
    if kind == "hf":
        assert auto_share > 1.5 * late_share, (auto_share, late_share)


# -- configs/autopsy/transformer.yaml inside a real Trainer -------------------------------------------------------
class ViTModule(pl.LightningModule):
    """A LightningModule around a third-party ViT; ``forward`` returns what the model returns (a Hugging Face
    ``ModelOutput`` or a tensor), as users write it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        return self.model(x)

    def _loss(self, batch) -> torch.Tensor:  # noqa: ANN001
        out = self(batch[0])
        return nn.functional.cross_entropy(out if isinstance(out, torch.Tensor) else out.logits, batch[1])

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=1e-3)


@pytest.mark.parametrize("kind", ["hf", "timm"])
def test_transformer_config_runs_in_a_lightning_trainer(tmp_path, kind: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cerebro.paths import config_dir

    out = tmp_path / "autopsy"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="demo", overrides=[
            "autopsy=transformer", f"autopsy.output_dir={out}", "autopsy.max_samples=4",
            "++autopsy.diagnostics.integrated_gradients.n_steps=4", "++autopsy.diagnostics.sanity_checks.samples=2"])
    callback = instantiate(cfg.autopsy)
    module = ViTModule(hf_vit() if kind == "hf" else timm_vit())
    before = _attn_settings(module)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32, generator=g),
                                          torch.randint(0, 3, (8,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, callbacks=[callback], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 2  # training ran (the callback's setup accepted the model)
    summary = json.loads((Path(out) / "summary.json").read_text())
    statuses = {n: (r["status"], r["reason"]) for n, r in summary["diagnostics"].items()}
    # spectral_integrated_gradients (from default.yaml) is for (channels, time) signals, not images: not judged here
    assert all(s in ("ok", "skipped") for n, (s, _) in statuses.items()
               if n != "spectral_integrated_gradients"), statuses
    for name in ("layer_gradcam", "attention_rollout", "integrated_gradients", "sanity_checks"):
        assert statuses[name][0] == "ok", (name, statuses[name])
    assert summary["diagnostics"]["layer_gradcam"]["metrics"]["layer"] == adapters.token_blocks(module)[0]
    assert load_array(out, "attention_rollout", "attributions").shape == (4, 1, 32, 32)
    assert _attn_settings(module) == before and _no_hooks(module)


# -- (B, T, D) layers of a text model on token ids ----------------------------------------------------------------
def _bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("layer", ["bert.embeddings", "bert.encoder.layer.0"])
def test_bert_token_layers_give_per_token_maps_equal_to_captum(tmp_path, layer: str) -> None:
    model = _bert()
    ids = torch.randint(1, 50, (4, 8), generator=torch.Generator().manual_seed(0))
    summary = autopsy(model, (ids,), tmp_path, [{"layer_integrated_gradients": {"layer": layer, "n_steps": 16}},
                                                {"layer_gradcam": {"layer": layer}}],
                      target={"kind": "classification", "class": 1})
    for name in ("layer_integrated_gradients", "layer_gradcam"):
        rec = summary["diagnostics"][name]
        assert rec["status"] == "ok", rec["reason"]
        assert (rec["metrics"]["layout"], rec["metrics"]["map_shape"]) == ("tokens", [1, 8]), rec["metrics"]
        maps = load_array(tmp_path, name, "attributions")
        assert maps.shape == (4, 1, 8) and np.isfinite(maps).all()
        assert np.ptp(maps.reshape(4, -1), axis=1).min() > 1e-4 * np.abs(maps).max(), name
    got = load_array(tmp_path, "layer_integrated_gradients", "attributions")[:, 0]
    # Captum's own per-token attribution: LayerIntegratedGradients on the same layer, pad (id 0) baseline, summed
    # over the hidden size D
    ref = LayerIntegratedGradients(lambda t: model(t).logits, dict(model.named_modules())[layer]).attribute(
        ids, baselines=torch.zeros_like(ids), target=1, n_steps=16)
    ref = (ref[0] if isinstance(ref, tuple) else ref).sum(-1).detach().numpy()
    pearson = [float(np.corrcoef(got[i], ref[i])[0, 1]) for i in range(4)]
    assert min(pearson) > 0.99, pearson
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


class MixedWidths(nn.Module):
    """A sequence model (embeddings) with a layer whose (B, 5, 7) output matches no known token width."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.mix = nn.Sequential(nn.Flatten(1), nn.Unflatten(1, (5, -1)))
        self.proj = nn.Conv1d(5, 5, 1)
        self.head = nn.Linear(5 * 7, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.mix(self.embed(ids)[:, :, :7].reshape(ids.shape[0], -1)[:, :35])
        return self.head(self.proj(h).flatten(1))


def test_undecidable_token_layout_is_an_error_naming_the_layout_option(tmp_path) -> None:
    ids = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    summary = autopsy(MixedWidths().eval(), (ids, torch.randn(3, 1)), tmp_path, [{"layer_gradcam": {"layer": "mix"}}])
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "failed"
    assert "layout: tokens" in rec["reason"] and "layout: channels_first" in rec["reason"], rec["reason"]
    ok = autopsy(MixedWidths().eval(), (ids, torch.randn(3, 1)), tmp_path / "ok",
                 [{"layer_gradcam": {"layer": "mix", "layout": "channels_first"}}])
    assert ok["diagnostics"]["layer_gradcam"]["metrics"]["layout"] == "channels_first"


def test_torchvision_vit_blocks_are_found_around_their_multihead_attention() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=3).eval()
    assert adapters.token_blocks(model) == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert adapters.prefix_tokens(model) == 1 and adapters.hidden_sizes(model) == {32}
    from cerebro.diagnostics.layer_gradcam import LayerGradCam

    assert LayerGradCam().select_layer(model)[0] == "encoder.layers.encoder_layer_0"  # never the patch conv
