"""Targets beyond regression and classes: embedding norm, cosine similarity to a reference, user callables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn
from torch.utils.data import DataLoader

import cerebro
from cerebro import CerebroConfigError
from cerebro.targets import build_target
from tests.autopsy_helpers import autopsy, load_array


def margin(output: torch.Tensor, batch: dict) -> torch.Tensor:
    """Logit of class 1 minus class 0 (a user target for `_target_`)."""
    return output[:, 1] - output[:, 0]


def label_logit(output: torch.Tensor, batch: dict, scale: float = 1.0) -> torch.Tensor:
    return scale * output.gather(1, batch["target"].reshape(-1, 1).long()).squeeze(1)


def bad_shape(output: torch.Tensor, batch: dict) -> torch.Tensor:
    return output[:, :1]


def _embedder(d_in: int = 6, d: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d)).eval()


class FaceNet(nn.Module):
    """A small 2-D conv embedding network (face-verification style): (3, 16, 16) -> 8-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _complete(out, name: str = "integrated_gradients") -> np.ndarray:  # noqa: ANN001
    """sum(attributions) - delta, per sample: equals f(x) - f(baseline) by construction of the delta."""
    attr = load_array(out, name, "attributions")
    return attr.reshape(attr.shape[0], -1).sum(1) - load_array(out, name, "convergence_delta")


def test_norm_target_ig_sums_to_the_norm_difference(tmp_path) -> None:
    model = _embedder()
    x = torch.randn(7, 6)
    summary = autopsy(model, (x,), tmp_path, ["predictions", {"integrated_gradients": {"n_steps": 64}}],
                      target="norm")
    assert summary["status"] == "ok" and summary["target"] == {"kind": "norm"}
    attr = load_array(tmp_path, "integrated_gradients", "attributions")
    with torch.no_grad():
        expected = model(x).norm(dim=1) - model(torch.zeros(1, 6)).norm(dim=1)
    np.testing.assert_allclose(attr.sum(1), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(load_array(tmp_path, "predictions", "predictions"),
                               model(x).norm(dim=1).detach().numpy(), rtol=1e-5)
    assert summary["diagnostics"]["predictions"]["metrics"]["score_mean"] == pytest.approx(
        float(model(x).norm(dim=1).mean()), rel=1e-5)


def test_similarity_to_a_reference_vector_file(tmp_path) -> None:
    model = _embedder()
    x = torch.randn(6, 6)
    ref = np.random.default_rng(0).standard_normal(5).astype(np.float32)
    np.save(tmp_path / "ref.npy", ref)
    out = tmp_path / "out"
    summary = autopsy(model, (x, torch.randn(6, 1)), out, ["predictions", "failure_modes", "gradients",
                                         {"integrated_gradients": {"n_steps": 128}}],
                      target={"kind": "similarity", "reference": str(tmp_path / "ref.npy")})
    d = summary["diagnostics"]
    assert d["integrated_gradients"]["status"] == "ok"
    with torch.no_grad():
        r = torch.from_numpy(ref).unsqueeze(0)
        sim = F.cosine_similarity(model(x), r)
        gap = sim - F.cosine_similarity(model(torch.zeros(1, 6)), r)
    np.testing.assert_allclose(load_array(out, "predictions", "predictions"), sim.numpy(), rtol=1e-5)
    # the embedding model's IG attributions sum to the similarity difference
    np.testing.assert_allclose(load_array(out, "integrated_gradients", "attributions").sum(1), gap.numpy(), atol=1e-4)
    assert d["failure_modes"]["status"] == "skipped" and "makes no predictions" in d["failure_modes"]["reason"]
    assert d["gradients"]["metrics"]["loss_source"] == "target"


def test_per_sample_reference_rows_follow_the_sample_indices(tmp_path) -> None:
    model = _embedder()
    x = torch.randn(30, 6)
    refs = np.random.default_rng(1).standard_normal((30, 5)).astype(np.float32)
    torch.save(torch.from_numpy(refs), tmp_path / "refs.pt")
    summary = cerebro.run_autopsy(model, DataLoader(x, batch_size=7), diagnostics=["predictions"],
                                  target={"kind": "similarity", "reference": str(tmp_path / "refs.pt")},
                                  output_dir=tmp_path / "out", max_samples=10, sampling="random", seed=4)
    assert summary["status"] == "ok"
    idx = load_array(tmp_path / "out", "predictions", "indices")
    assert idx.tolist() != list(range(10))
    with torch.no_grad():
        expected = F.cosine_similarity(model(x[idx]), torch.from_numpy(refs[idx]))
    np.testing.assert_allclose(load_array(tmp_path / "out", "predictions", "predictions"), expected.numpy(),
                               rtol=1e-5)


@pytest.mark.parametrize("dict_batches", [False, True])
def test_similarity_to_a_reference_input_equals_captum(tmp_path, dict_batches: bool) -> None:
    """Seed 001: the reference embedding of each pair travels with the sample (Captum repeats it with n_steps)."""
    model = FaceNet().eval()
    g = torch.Generator().manual_seed(0)
    x, x_ref = torch.randn(5, 3, 16, 16, generator=g), torch.randn(5, 3, 16, 16, generator=g)
    if dict_batches:
        loader = DataLoader([{"image": a, "pair": b} for a, b in zip(x, x_ref)], batch_size=2)
        target = {"kind": "similarity", "reference_input": "pair"}
    else:
        loader = DataLoader(list(zip(x, x_ref)), batch_size=2)
        target = {"kind": "similarity", "reference_input": 1}
    out = tmp_path / "out"
    summary = cerebro.run_autopsy(model, loader, target=target, output_dir=out, max_samples=5, target_key=None,
                                  diagnostics=[{"integrated_gradients": {"n_steps": 16}}, "layer_gradcam"])
    assert summary["status"] == "ok", summary["diagnostics"]
    with torch.no_grad():
        ref_emb = model(x_ref)
    expected = CaptumIG(lambda inp, r: F.cosine_similarity(model(inp), r)).attribute(
        x, additional_forward_args=(ref_emb,), n_steps=16)
    np.testing.assert_allclose(load_array(out, "integrated_gradients", "attributions"), expected.detach().numpy(),
                               atol=1e-5)
    with torch.no_grad():
        gap = F.cosine_similarity(model(x), ref_emb) - F.cosine_similarity(model(torch.zeros_like(x)), ref_emb)
    np.testing.assert_allclose(_complete(out), gap.numpy(), atol=1e-5)
    cam = load_array(out, "layer_gradcam", "attributions")
    assert cam.shape == (5, 1, 16, 16) and np.isfinite(cam).all()
    assert (np.abs(cam).reshape(5, -1).max(1) > 0).all()
    assert summary["diagnostics"]["layer_gradcam"]["flags"] == []


def test_user_callable_target_via_target_path(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x, y = torch.randn(6, 4), torch.tensor([0, 2, 1, 1, 0, 2])
    summary = autopsy(model, (x, y), tmp_path / "m", [{"integrated_gradients": {"n_steps": 20}}],
                      target={"_target_": "tests.test_targets_extra.margin"})
    assert summary["target"] == {"kind": "callable", "_target_": "tests.test_targets_extra.margin"}
    ref = CaptumIG(lambda inp: model(inp)[:, 1] - model(inp)[:, 0]).attribute(x, n_steps=20)
    np.testing.assert_allclose(load_array(tmp_path / "m", "integrated_gradients", "attributions"),
                               ref.detach().numpy(), atol=1e-5)
    # labels travel with the batch (repeated with n_steps); keyword options are bound
    summary = autopsy(model, (x, y), tmp_path / "l", [{"integrated_gradients": {"n_steps": 20}}],
                      target={"_target_": "tests.test_targets_extra.label_logit", "scale": 2.0})
    ref = CaptumIG(model).attribute(x, target=y, n_steps=20) * 2.0
    np.testing.assert_allclose(load_array(tmp_path / "l", "integrated_gradients", "attributions"),
                               ref.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "similarity"}, "exactly one of `reference`"),
        ({"kind": "similarity", "reference": "a.npy", "reference_input": 1}, "exactly one of `reference`"),
        ({"kind": "similarity", "reference": "/nonexistent/ref.npy"}, "does not exist"),
        ({"kind": "similarity", "refrence": "a.npy"}, "Did you mean 'reference'"),
        ({"kind": "norm", "index": 1}, "can be one of \\[\\]"),
        ({"_target_": "tests.test_targets_extra.no_such_fn"}, "cannot be imported"),
    ],
)
def test_target_configuration_errors(spec, match: str) -> None:
    with pytest.raises(CerebroConfigError, match=match):
        build_target(spec)


def test_reference_must_match_the_embedding_size(tmp_path) -> None:
    np.save(tmp_path / "ref.npy", np.ones(7, dtype=np.float32))
    summary = autopsy(_embedder(), (torch.randn(4, 6),), tmp_path / "o", ["predictions"],
                      target={"kind": "similarity", "reference": str(tmp_path / "ref.npy")})
    assert summary["status"] == "failed"
    assert "target.reference vectors have 7 dimensions but the model's embeddings (2, 5) have 5" in summary["reason"]


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("norm", "norm target needs vector outputs (B, D); the model returned (2,)"),
        ({"_target_": "tests.test_targets_extra.bad_shape"}, "must return one scalar per sample, shape (2,); it "
                                                              "returned (2, 1)"),
        ({"kind": "similarity", "reference_input": 2}, "the batches have no tensor field ['field_2']"),
    ],
)
def test_adapters_checked_in_preflight(tmp_path, target, match: str) -> None:
    model = nn.Linear(6, 1) if target == "norm" else _embedder()
    squeeze = target == "norm"

    class Squeezed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.m(x)
            return out[:, 0] if squeeze else out

    summary = autopsy(Squeezed(), (torch.randn(4, 6), torch.randn(4, 1)), tmp_path, ["predictions"], target=target)
    assert summary["status"] == "failed"
    assert match in summary["reason"]
