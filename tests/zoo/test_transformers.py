"""Hugging Face transformers models (random weights, tiny configs): ViT and DeiT image classifiers (default SDPA
attention, ``ModelOutput`` outputs) and a BERT text classifier on integer token ids; attention rollout checked
against a hand rollout of the eager attention weights of the same model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.autopsy_helpers import load_array
from tests.zoo.conftest import N, CaseRun, assert_case_ok, run_case
from tests.zoo.models import image_cases

pytest.importorskip("transformers")
CASES = {c.name: c for c in image_cases()}


@pytest.fixture(scope="module")
def vit(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["transformers/ViTForImageClassification"], zoo_dir / "hf_vit")


@pytest.fixture(scope="module")
def deit(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["transformers/DeiTForImageClassification"], zoo_dir / "hf_deit")


@pytest.fixture(scope="module")
def bert(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["transformers/BertForSequenceClassification"], zoo_dir / "hf_bert")


def test_hf_vit_every_diagnostic(vit: CaseRun) -> None:
    assert_case_ok(vit)
    gradcam = vit.rec("layer_gradcam")["metrics"]
    assert "patch_embeddings" not in gradcam["layer"]  # a token layer, never the patch-embedding conv


def test_hf_deit_every_diagnostic(deit: CaseRun) -> None:
    assert_case_ok(deit)
    assert deit.rec("attention_rollout")["metrics"]["prefix_tokens"] == 2  # [CLS] and distillation tokens


def test_hf_bert_on_token_ids(bert: CaseRun) -> None:
    assert_case_ok(bert)
    for name in ("saliency", "integrated_gradients", "occlusion"):
        assert load_array(bert.out, name, "attributions").shape == (N, 12)


def hand_rollout_hf(model: torch.nn.Module, x: torch.Tensor, prefix: int, grid: int) -> np.ndarray:
    """Rollout of the class token from the eager attention weights (``output_attentions``) of a copy of ``model``."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = eager(x, output_attentions=True).attentions
    joint = None
    for w in attentions:
        a = w.double().mean(1)
        a = (a + torch.eye(a.shape[-1], dtype=a.dtype)) / 2
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    cls_row = joint[:, 0, prefix:].reshape(-1, 1, grid, grid).float()
    return F.interpolate(cls_row, size=tuple(x.shape[-2:]), mode="bilinear").numpy()


@pytest.mark.parametrize("which, prefix", [("vit", 1), ("deit", 2)])
def test_hf_rollout_equals_a_hand_rollout(which: str, prefix: int, request: pytest.FixtureRequest) -> None:
    run: CaseRun = request.getfixturevalue(which)
    rec = run.rec("attention_rollout")
    assert rec["status"] == "ok", rec["reason"]
    assert run.model.config._attn_implementation == "sdpa"  # the default, restored after the autopsy
    got = load_array(run.out, "attention_rollout", "attributions")
    np.testing.assert_allclose(got, hand_rollout_hf(run.model, run.tensors[0], prefix, grid=4), rtol=1e-4, atol=1e-7)
