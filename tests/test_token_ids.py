"""Token-id inputs: a Hugging Face BERT-style text classifier fed ``input_ids`` (B, T) int64, explained per token.

Gradient methods attribute at the output of the input embedding (what Captum's ``LayerIntegratedGradients(model,
model.get_input_embeddings())`` does) and store one value per token ``(N, T)``; perturbation methods replace
tokens by the pad (or a chosen) token id. Random-weight tiny ``BertConfig`` models only, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from captum.attr import LayerIntegratedGradients
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from cerebro.adapters.tokens import build_token_options
from cerebro.errors import CerebroConfigError
from tests.autopsy_helpers import autopsy, load_array, load_summary

transformers = pytest.importorskip("transformers", reason="transformers is in the test extra")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N, T, PLANT, CLS, STEPS = 16, 12, 5, 2, 32
GRADIENT = ["integrated_gradients", "saliency", "input_x_gradient", "deeplift", "gradient_shap", "smoothgrad"]
PERTURBATION = ["occlusion"]  # feature_ablation: PadCounter tests below


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids 10..99 after a class-like token; label 1 iff token PLANT is somewhere in the sequence (one position)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 100, (n, T), generator=g)
    y = torch.arange(n) % 2
    pos = torch.randint(1, T, (n,), generator=g)
    ids[y == 1, pos[y == 1]] = PLANT
    ids[:, 0] = CLS
    return ids, y


class TextClassifier(pl.LightningModule):
    """A transformers BERT sequence classifier (tiny config, random init) whose forward takes ``input_ids`` only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=32, num_labels=2,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = transformers.BertForSequenceClassification(cfg)
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits

    def training_step(self, batch, _i):  # noqa: ANN001, ANN201
        return self.loss_fn(self(batch[0]), batch[1])

    def validation_step(self, batch, _i):  # noqa: ANN001, ANN201
        self.log("val_loss", self.loss_fn(self(batch[0]), batch[1]))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, dict, torch.Tensor, TextClassifier]:
    """Train a few steps so token PLANT decides the label; the callback explains the best checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # speed only: a tiny model on shared cores; results do not depend on it
    try:
        root = tmp_path_factory.mktemp("tokens")
        x, y = planted(640, 0)
        xv, yv = planted(N, 1)
        model = TextClassifier()
        ig = {"n_steps": STEPS, "method": "gausslegendre", "delta_tolerance": 0.05}  # Captum's rule and step count
        diags = ["predictions", {"integrated_gradients": ig}, "saliency", "input_x_gradient",
                 "deeplift", {"gradient_shap": {"n_samples": 4, "reference_size": 4}},
                 {"smoothgrad": {"nt_samples": 4}}, "occlusion"]
        cb = ModelAutopsy(diagnostics=diags, target={"kind": "classification", "class": "predicted"}, max_samples=N,
                          output_dir=root / "autopsy")
        trainer = pl.Trainer(default_root_dir=root, max_epochs=2, accelerator="cpu", logger=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=[ModelCheckpoint(monitor="val_loss"), cb])
        trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
                    DataLoader(TensorDataset(xv, yv), batch_size=8))
        summary = load_summary(root / "autopsy")
        best = TextClassifier()
        state = torch.load(summary["checkpoint"]["path"], map_location="cpu", weights_only=True)["state_dict"]
        best.load_state_dict(state)
        yield root / "autopsy", summary, xv, best.eval()
    finally:
        torch.set_num_threads(threads)


def test_token_ids_are_detected_and_every_method_maps_one_value_per_token(text_run) -> None:
    out, summary, xv, _ = text_run
    statuses = {n: (r["status"], r["reason"]) for n, r in summary["diagnostics"].items()}
    assert all(s == "ok" for s, _ in statuses.values()), statuses
    assert summary["checkpoint"]["source"] == "best"
    assert summary["samples"]["input_kind"] == "token_ids" and summary["samples"]["input_dtype"] == "int64"
    tok = summary["tokens"]
    assert tok["embedding"] == "bert.bert.embeddings.word_embeddings" and tok["embedding_dim"] == 32
    assert tok["pad_token_id"] == 0 and tok["baseline_token_id"] == 0 and tok["error"] is None
    assert tok["id_sources"]["pad"] == "BertConfig.pad_token_id"
    for name in GRADIENT + PERTURBATION:
        maps = load_array(out, name, "attributions")
        assert maps.shape == (N, T), (name, maps.shape)
        assert np.isfinite(maps).all(), name
        assert (np.ptp(maps, axis=1) > 1e-6 * np.abs(maps).max()).all(), f"{name}: a constant per-token map"
        # known, honest flags: IG's convergence (checked against its deltas below), DeepLift's rule on BERT's GELU
        flags = [f for f in summary["diagnostics"][name]["flags"]
                 if not f.startswith(("IG not converged", "deeplift: Captum's DeepLift rule does not hold on GELU"))]
        assert flags == [], (name, flags)
        figures = [a for a in summary["diagnostics"][name]["artifacts"] if a.endswith(".png")]
        assert any("sample0" in f for f in figures) and len(figures) >= 2, (name, figures)
        assert not (out / f"arrays/{name}/attributions_per_dimension.npy").exists()


def test_ig_on_token_ids_equals_captum_layer_ig_on_the_input_embeddings(text_run) -> None:
    out, summary, xv, model = text_run
    ours = load_array(out, "integrated_gradients", "attributions")
    with torch.no_grad():
        pred = model(xv).argmax(1)
    lig = LayerIntegratedGradients(model, model.bert.get_input_embeddings())
    ref = lig.attribute(xv, baselines=torch.zeros_like(xv), target=pred, n_steps=STEPS,
                        method="gausslegendre").sum(-1).detach().numpy()
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-6, rel
    # completeness, checked independently of the engine: sum over tokens vs f(ids) - f(all pad)
    with torch.no_grad():
        gap = (model(xv).gather(1, pred[:, None]) - model(torch.zeros_like(xv)).gather(1, pred[:, None]))[:, 0]
    delta = ours.sum(1) - gap.numpy()
    np.testing.assert_allclose(load_array(out, "integrated_gradients", "convergence_delta"), delta, atol=1e-4)
    rel = np.abs(delta) / np.abs(gap.numpy())
    assert np.median(rel[~(xv == PLANT).any(1).numpy()]) < 1e-3  # no planted token: a smooth path
    # the planted token is a sharp step along the path (32 steps do not resolve it): reported, not hidden
    rec = summary["diagnostics"]["integrated_gradients"]
    bad = int(np.sum((rel > 0.05) & (np.abs(delta) > 1e-6)))
    assert rec["metrics"]["not_converged"] == bad and rec["metrics"]["n_steps"] == STEPS
    assert any(f.startswith(f"IG not converged on {bad}/{N}") for f in rec["flags"]) == (bad > 0), rec["flags"]


def test_ig_puts_the_largest_attribution_on_the_planted_token(text_run) -> None:
    out, summary, xv, model = text_run
    assert summary["diagnostics"]["predictions"]["metrics"]["accuracy"] >= 0.9
    with torch.no_grad():
        pred = model(xv).argmax(1)
    ig = load_array(out, "integrated_gradients", "attributions")
    rows = [i for i in range(N) if (xv[i] == PLANT).any() and pred[i] == 1]
    assert len(rows) >= N // 2 - 1
    hits = [bool(xv[i, int(np.argmax(np.abs(ig[i])))] == PLANT) for i in rows]
    assert np.mean(hits) >= 0.8, hits


class PadCounter(nn.Module):
    """A plain (non-HF) token model whose output counts the pad tokens (id 7, the embedding's padding_idx)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 4, padding_idx=7)
        with torch.no_grad():
            self.emb.weight.normal_()
            self.emb.weight[:, 0] = 0.0
            self.emb.weight[7, 0] = 1.0
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
            self.head.bias.zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids)).sum(dim=1)


def _pad_ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 20, (6, 9), generator=g)
    ids[:, ::3] = 7
    return ids


def test_perturbations_replace_tokens_by_the_pad_id_and_ig_starts_from_its_embedding(tmp_path) -> None:
    ids = _pad_ids()
    diags = ["occlusion", "feature_ablation", {"integrated_gradients": {"n_steps": 8}}]
    summary = autopsy(PadCounter(), (ids,), tmp_path, diags)
    assert summary["status"] == "ok", summary["diagnostics"]
    assert summary["tokens"]["embedding"] == "emb" and summary["tokens"]["pad_token_id"] == 7
    assert summary["tokens"]["id_sources"]["pad"] == "Embedding.padding_idx"
    expected = -(ids != 7).float().numpy()  # a non-pad token replaced by pad adds one pad: drop of -1
    for name in ("occlusion", "feature_ablation", "integrated_gradients"):
        np.testing.assert_allclose(load_array(tmp_path, name, "attributions"), expected, atol=1e-5, err_msg=name)


def test_baseline_token_option_and_per_dimension_maps(tmp_path) -> None:
    ids = _pad_ids()
    diags = ["occlusion", {"integrated_gradients": {"n_steps": 8}}, "input_x_gradient"]
    summary = autopsy(PadCounter(), (ids,), tmp_path / "id3", diags, tokens={"baseline": 3, "per_dimension": True})
    assert summary["status"] == "ok" and summary["tokens"]["baseline_token_id"] == 3
    # a pad token replaced by 3 removes one pad (+1); anything else changes nothing
    np.testing.assert_allclose(load_array(tmp_path / "id3", "occlusion", "attributions"), (ids == 7).float().numpy(),
                               atol=1e-6)
    for name in ("integrated_gradients", "input_x_gradient"):
        per_dim = load_array(tmp_path / "id3", name, "attributions_per_dimension")
        assert per_dim.shape == (6, 9, 4)
        np.testing.assert_allclose(per_dim.sum(-1), load_array(tmp_path / "id3", name, "attributions"), atol=1e-6)
    # zero embedding baseline: IG of a model linear in the embedding is the embedding's first coordinate
    summary = autopsy(PadCounter(), (ids,), tmp_path / "zeros", diags, tokens={"baseline": "zeros"})
    np.testing.assert_allclose(load_array(tmp_path / "zeros", "integrated_gradients", "attributions"),
                               (ids == 7).float().numpy(), atol=1e-5)
    occ = summary["diagnostics"]["occlusion"]
    assert occ["status"] == "failed" and "tokens.baseline" in occ["reason"] and "zeros" in occ["reason"]


def test_token_errors_name_the_fix(tmp_path) -> None:
    ids = _pad_ids()
    summary = autopsy(PadCounter(), (ids,), tmp_path / "mask", ["occlusion", {"integrated_gradients": {"baseline": "mean"}}],
                      tokens={"baseline": "mask"})
    recs = summary["diagnostics"]
    assert recs["occlusion"]["status"] == "failed" and "no mask token" in recs["occlusion"]["reason"]
    assert recs["integrated_gradients"]["status"] == "failed"
    assert "tokens.baseline" in recs["integrated_gradients"]["reason"]

    class Casts(nn.Module):  # integer inputs that no embedding consumes
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(9, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.float())

    summary = autopsy(Casts(), (ids,), tmp_path / "casts", ["saliency", "occlusion"], tokens={"baseline": 0})
    assert summary["samples"]["input_kind"] == "integer" and "tokens.embedding" in summary["tokens"]["error"]
    sal = summary["diagnostics"]["saliency"]
    assert sal["status"] == "failed" and "tokens.embedding" in sal["reason"]
    assert summary["diagnostics"]["occlusion"]["status"] == "ok"  # perturbations stay on the ids
    with pytest.raises(CerebroConfigError, match="tokens.baseline"):
        build_token_options({"baseline": "unk"})
    with pytest.raises(CerebroConfigError, match="per_dimension"):
        build_token_options({"per_dimension": "yes"})


def test_sanity_checks_rerun_token_methods_on_the_embeddings(tmp_path) -> None:
    ids = _pad_ids()
    diags = [{"integrated_gradients": {"n_steps": 8}}, "saliency", "occlusion", {"sanity_checks": {"samples": 4, "layers": 2}}]
    summary = autopsy(PadCounter(), (ids,), tmp_path, diags)
    rec = summary["diagnostics"]["sanity_checks"]
    assert rec["status"] == "ok", rec["reason"]
    assert not [f for f in rec["flags"] if "could not run" in f], rec["flags"]
