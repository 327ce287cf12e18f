"""timm models (random weights): a CNN (resnet10t) and a ViT with fused attention on (timm's default); attention
rollout checked against a hand rollout of the same weights, computed with fused attention off."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.autopsy_helpers import load_array
from tests.zoo.conftest import CaseRun, assert_case_ok, run_case
from tests.zoo.models import image_cases

pytest.importorskip("timm")
CASES = {c.name: c for c in image_cases()}


@pytest.fixture(scope="module")
def resnet(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["timm/resnet10t"], zoo_dir / "timm_resnet")


@pytest.fixture(scope="module")
def vit(zoo_dir: Path) -> CaseRun:
    return run_case(CASES["timm/vit (fused attention)"], zoo_dir / "timm_vit")


def test_timm_resnet_every_diagnostic(resnet: CaseRun) -> None:
    assert_case_ok(resnet)
    assert not [f for f in resnet.rec("layer_gradcam")["flags"] if f.startswith("degenerate")]


def test_timm_vit_every_diagnostic(vit: CaseRun) -> None:
    assert_case_ok(vit)
    assert all(b.attn.fused_attn for b in vit.model.blocks)  # the user's setting is restored


def hand_rollout_timm(model: torch.nn.Module, x: torch.Tensor, grid: int) -> np.ndarray:
    """Abnar & Zuidema rollout (mean over heads, (A + I) / 2, rows renormalised) of the class token, by hand."""
    eager = copy.deepcopy(model)
    weights: list[torch.Tensor] = []
    for block in eager.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: weights.append(o.detach().double()))
    with torch.no_grad():
        eager(x)
    joint = None
    for w in weights:
        a = w.mean(1)
        a = (a + torch.eye(a.shape[-1], dtype=a.dtype)) / 2
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    cls_row = joint[:, 0, 1:].reshape(-1, 1, grid, grid).float()
    return F.interpolate(cls_row, size=tuple(x.shape[-2:]), mode="bilinear").numpy()


def test_timm_vit_rollout_equals_a_hand_rollout(vit: CaseRun) -> None:
    rec = vit.rec("attention_rollout")
    assert rec["status"] == "ok", rec["reason"]
    got = load_array(vit.out, "attention_rollout", "attributions")
    ref = hand_rollout_timm(vit.model, vit.tensors[0], grid=4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
