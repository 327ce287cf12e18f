"""torchvision models (random weights): resnet18, mobilenet_v3_small (in-place Hardswish), a resnet18 embedding model
with the cosine-similarity target; references: pytorch-grad-cam and Captum; one run inside a real Lightning Trainer
on the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from tests.autopsy_helpers import load_array, load_summary
from tests.zoo.conftest import N, CaseRun, assert_case_ok, run_case
from tests.zoo.models import IMG64, N_STEPS, ZooCase, image_cases, images, seeded_build, tv_resnet18, tv_resnet18_embedding

pytest.importorskip("torchvision")
CASES = {c.name: c for c in image_cases()}


def per_sample_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


@pytest.fixture(scope="module")
def resnet18(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["torchvision/resnet18"], zoo_dir / "resnet18")


def test_resnet18_every_diagnostic(resnet18: CaseRun) -> None:
    assert_case_ok(resnet18)
    gradcam = resnet18.rec("layer_gradcam")
    assert not [f for f in gradcam["flags"] if f.startswith("degenerate")]  # 64x64: layer4 is 2x2, a real map


def test_resnet18_integrated_gradients_equal_captum(resnet18: CaseRun) -> None:
    x, _ = resnet18.tensors
    model = resnet18.model
    with torch.no_grad():
        classes = model(x).argmax(1)
    ref = IntegratedGradients(model).attribute(x, target=classes, n_steps=N_STEPS, method="gausslegendre")
    got = load_array(resnet18.out, "integrated_gradients", "attributions")
    scale = float(ref.abs().max())
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5 * scale)
    m = resnet18.rec("integrated_gradients")["metrics"]
    assert m["completeness"] == "exact" and m["completeness_median_relative_error"] is not None


def test_resnet18_gradcam_equals_pytorch_grad_cam(zoo_dir: Path, resnet18: CaseRun) -> None:
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, (x, _) = resnet18.model, resnet18.tensors
    run = run_case(resnet18.case, zoo_dir / "resnet18_layer4", model=model,
                   diagnostics=[{"layer_gradcam": {"layer": "layer4", "relu": True}}])
    assert run.changed == []
    assert run.rec("layer_gradcam")["status"] == "ok"
    ours = load_array(run.out, "layer_gradcam", "attributions")[:, 0]
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    with grad_cam.GradCAM(model=model, target_layers=[model.layer4]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    assert ref.shape == ours.shape == (N, 64, 64)
    r = per_sample_pearson(ours, ref)
    assert r.min() >= 0.9999, r


def test_resnet18_layer4_on_32px_images_is_a_flagged_constant_map(zoo_dir: Path, resnet18: CaseRun) -> None:
    """On 32x32 inputs layer4 is 1x1: its Grad-CAM is constant over the image and must say so."""
    case = ZooCase("torchvision/resnet18@32", "torchvision", seeded_build(tv_resnet18), lambda n: images(n, 32),
                   [{"layer_gradcam": {"layer": "layer4"}}], {"kind": "classification"})
    run = run_case(case, zoo_dir / "resnet18_32", model=resnet18.model)
    rec = run.rec("layer_gradcam")
    assert rec["status"] == "ok"
    assert any(f.startswith("degenerate map: every sample's map is constant") for f in rec["flags"]), rec["flags"]
    assert run.problems("layer_gradcam") == []


@pytest.fixture(scope="module")
def mobilenet(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["torchvision/mobilenet_v3_small"], zoo_dir / "mobilenet")


def test_mobilenet_v3_small_in_place_hardswish(mobilenet: CaseRun) -> None:
    assert mobilenet.changed == []
    for name, rec in mobilenet.summary["diagnostics"].items():
        assert rec["status"] == "ok", (name, rec["reason"])
        assert mobilenet.problems(name) == []
    assert mobilenet.rec("activations")["metrics"]["layers"] > 50


def test_mobilenet_v3_small_deeplift_completeness_is_measured_and_flagged(mobilenet: CaseRun) -> None:
    rec = mobilenet.rec("deeplift")
    m = rec["metrics"]
    assert m["completeness"] == "exact"
    assert m["completeness_median_relative_error"] > 0.05  # Captum passes plain gradients through Hardswish
    flag = [f for f in rec["flags"] if "rule does not hold" in f]
    assert len(flag) == 1, rec["flags"]
    assert "Hardswish" in flag[0] and "Hardsigmoid" in flag[0]
    assert f"median {m['completeness_median_relative_error']:.3g}" in flag[0]
    ig = mobilenet.rec("integrated_gradients")["metrics"]  # the same axiom, a method for which it holds
    assert ig["completeness_median_relative_error"] < m["completeness_median_relative_error"]


def test_resnet18_embedding_with_similarity_target_equals_captum(zoo_dir: Path) -> None:
    model = seeded_build(tv_resnet18_embedding)()
    x, _ = images(N)
    g = torch.Generator().manual_seed(1)
    ref_vec = torch.randn(512, generator=g)
    np.save(zoo_dir / "reference.npy", ref_vec.numpy())
    case = ZooCase("torchvision/resnet18 embedding", "torchvision", lambda: model, images,
                   ["saliency", {"integrated_gradients": {"n_steps": N_STEPS}}],
                   {"kind": "similarity", "reference": str(zoo_dir / "reference.npy")}, map_shapes=IMG64)
    run = run_case(case, zoo_dir / "embedding", model=model)
    assert_case_ok(run)

    def cosine(inp: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(model(inp), ref_vec.expand(inp.shape[0], -1), dim=1)

    ref = IntegratedGradients(cosine).attribute(x, n_steps=N_STEPS, method="gausslegendre")
    got = load_array(run.out, "integrated_gradients", "attributions")
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))


class Classifier(pl.LightningModule):
    """A LightningModule around a torchvision classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tv_resnet18()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_resnet18_in_a_lightning_trainer_on_the_best_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x, y = images(8)
    data = DataLoader(TensorDataset(x, y), batch_size=4)
    autopsy = ModelAutopsy(diagnostics=[{"integrated_gradients": {"n_steps": 4}}, {"layer_gradcam": {"layer": "net.layer4"}}],
                           target={"kind": "classification"}, max_samples=4)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=2, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ckpt, autopsy])
    trainer.fit(Classifier(), train_dataloaders=data, val_dataloaders=data)
    summary = load_summary(tmp_path / "autopsy")
    assert summary["status"] == "ok", summary["reason"]
    assert summary["checkpoint"]["source"] == "best"
    assert summary["checkpoint"]["path"] == ckpt.best_model_path
    for name in ("integrated_gradients", "layer_gradcam"):
        rec = summary["diagnostics"][name]
        assert rec["status"] == "ok", rec["reason"]
        assert not [f for f in rec["flags"] if f.startswith("degenerate")], rec["flags"]
    assert load_array(tmp_path / "autopsy", "layer_gradcam", "attributions").shape == (4, 1, 64, 64)
