"""The model zoo of the compatibility matrix: real third-party models with random weights at tiny sizes.

Shared by the tests in ``tests/zoo/`` and by ``scripts/zoo_matrix.py`` (which writes ``docs/compatibility.md``), so
both run the very same models, inputs, targets and diagnostic lists. Nothing is downloaded: every model is built
from its library's constructor or config with ``pretrained=False`` / random initialisation, seeded.

A :class:`ZooCase` says how to build the model, its inputs, the target and the diagnostics run on it;
:func:`check_record` judges one diagnostic's record the way the tests do (status, map shape, finite and
non-constant maps or a ``degenerate map`` flag), and :func:`verdict` turns it into a table cell.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STANDINS = Path(__file__).resolve().parent / "standins"


def use_torchaudio_standin() -> bool:
    """Put the test-only torchaudio stand-in on ``sys.path`` when a real torchaudio is not importable (braindecode
    imports torchaudio at module level; no torchaudio release exists for torch >= 2.12). True when it is in use."""
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a build for another torch
        sys.modules.pop("torchaudio", None)
        if str(STANDINS) not in sys.path:
            sys.path.insert(0, str(STANDINS))
        return True
    return bool(getattr(sys.modules["torchaudio"], "STANDIN", False))


# -- the cases --------------------------------------------------------------------------------------------------
@dataclass
class ZooCase:
    """One model of the matrix: how to build it, its inputs and what to run on it."""

    name: str
    family: str
    build: Callable[[], nn.Module]
    #: ``make_inputs(n)`` -> the loader tensors ``(x, y, ...)``, seeded.
    make_inputs: Callable[[int], tuple[torch.Tensor, ...]]
    diagnostics: list[Any]
    target: Any = "regression"
    #: More keyword arguments of ``run_autopsy`` (``output_key``, ``tokens``, ...).
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Shape of one stored map per attribution diagnostic (None: not checked).
    map_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def images(n: int, size: int = 64, classes: int = 4, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def eeg_windows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Challenge geometry: 129 channels x 200 samples at 100 Hz, a response time per window."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 129, 200, generator=g), torch.rand(n, 1, generator=g)


def token_ids(n: int, length: int = 12, vocab: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    ids[:, 0] = 2  # a [CLS]-like id, as tokenizers put it
    return ids, torch.randint(0, 2, (n,), generator=g)


def seeded_build(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return fn().eval()

    return build


# torchvision
def tv_resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=4)


def tv_mobilenet_v3_small() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=4)  # Hardswish(inplace=True) inside


def tv_resnet18_embedding() -> nn.Module:
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()  # (B, 512) embeddings
    return model


# timm
def timm_resnet() -> nn.Module:
    import timm

    # zero_init_last=False: timm zero-initialises the last BatchNorm of every residual branch, so at init the branch
    # (and Grad-CAM on its convs, which layer auto picks) is exactly zero - flagged "all values are zero"; a trained
    # model has non-zero scales there, which is the case the matrix is about.
    return timm.create_model("resnet10t", pretrained=False, num_classes=4, zero_init_last=False)


def timm_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                              num_classes=4)
    assert all(b.attn.fused_attn for b in model.blocks)  # timm's default where SDPA exists: the case under test
    return model


# transformers
def hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=4)
    return ViTForImageClassification(cfg)


def hf_deit() -> nn.Module:
    from transformers import DeiTConfig, DeiTForImageClassification

    cfg = DeiTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, num_labels=4)
    return DeiTForImageClassification(cfg)  # two prefix tokens: [CLS] and distillation


def hf_bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, num_labels=2, pad_token_id=0)
    return BertForSequenceClassification(cfg)


N_STEPS = 8  # IG / layer IG steps in the matrix (references use the same)
IMAGE_DIAGNOSTICS: list[Any] = ["activations", "saliency", {"integrated_gradients": {"n_steps": N_STEPS}},
                                "layer_gradcam"]
VIT_DIAGNOSTICS: list[Any] = ["saliency", {"integrated_gradients": {"n_steps": N_STEPS}}, "layer_gradcam",
                              "attention_rollout"]
#: EEG models: the diagnostics the issue found broken on them (activations on reused modules, Grad-CAM's layer) and
#: IG; few, because the matrix runs ~30 braindecode models on two CPU cores.
EEG_DIAGNOSTICS: list[Any] = ["activations", {"integrated_gradients": {"n_steps": 4}}, "layer_gradcam"]
IMG64 = {"saliency": (3, 64, 64), "integrated_gradients": (3, 64, 64), "layer_gradcam": (1, 64, 64),
         "deeplift": (3, 64, 64)}
IMG32 = {"saliency": (3, 32, 32), "integrated_gradients": (3, 32, 32), "layer_gradcam": (1, 32, 32),
         "attention_rollout": (1, 32, 32)}
CLASSIFICATION = {"kind": "classification"}
EEG = {"saliency": (129, 200), "integrated_gradients": (129, 200)}


def image_cases() -> list[ZooCase]:
    """torchvision, timm and transformers image/text models."""
    return [
        ZooCase("torchvision/resnet18", "torchvision", seeded_build(tv_resnet18), images, IMAGE_DIAGNOSTICS,
                CLASSIFICATION, map_shapes=IMG64),
        ZooCase("torchvision/mobilenet_v3_small", "torchvision", seeded_build(tv_mobilenet_v3_small), images,
                ["activations", {"integrated_gradients": {"n_steps": N_STEPS}}, "deeplift", "layer_gradcam"], CLASSIFICATION, map_shapes=IMG64),
        ZooCase("timm/resnet10t", "timm", seeded_build(timm_resnet), images, IMAGE_DIAGNOSTICS, CLASSIFICATION,
                map_shapes=IMG64),
        ZooCase("timm/vit (fused attention)", "timm", seeded_build(timm_vit), lambda n: images(n, 32), VIT_DIAGNOSTICS,
                CLASSIFICATION, map_shapes=IMG32),
        ZooCase("transformers/ViTForImageClassification", "transformers", seeded_build(hf_vit),
                lambda n: images(n, 32), VIT_DIAGNOSTICS, CLASSIFICATION, map_shapes=IMG32),
        ZooCase("transformers/DeiTForImageClassification", "transformers", seeded_build(hf_deit),
                lambda n: images(n, 32), VIT_DIAGNOSTICS, CLASSIFICATION, map_shapes=IMG32),
        ZooCase("transformers/BertForSequenceClassification", "transformers", seeded_build(hf_bert), token_ids,
                ["saliency", {"integrated_gradients": {"n_steps": N_STEPS}}, "occlusion"],
                CLASSIFICATION, map_shapes={"saliency": (12,), "integrated_gradients": (12,), "occlusion": (12,)}),
    ]


# braindecode ---------------------------------------------------------------------------------------------------
#: Must build and work (the issue's list): the first five always worked, the last five were broken.
BRAINDECODE_REQUIRED = ("EEGNeX", "EEGInceptionERP", "EEGConformer", "TSception", "CTNet",
                        "ShallowFBCSPNet", "Deep4Net", "EEGNet", "ATCNet", "EEGTCNet")
#: Built only by the script's ``--all``: over ~3M parameters, too slow for the CPU test budget.
BRAINDECODE_HEAVY = {"BENDR": "157M parameters", "DeepSleepNet": "178M parameters", "STEEGFormer": "25M parameters",
                     "CodeBrain": "36M parameters", "EEGPT": "25M parameters", "LUNA": "7.1M parameters",
                     "BrainModule": "6.2M parameters", "CBraMod": "4.9M parameters", "BIOT": "3.2M parameters",
                     "EEGInceptionMI": "3.7M parameters", "MEDFormer": "2.7M parameters", "USleep": "2.5M parameters"}
#: Not even tried: their constructor downloads data (no network in tests).
BRAINDECODE_DOWNLOADS = {"REVE": "downloads a channel-position bank from huggingface.co when built"}


def braindecode_names() -> list[str]:
    """Every model class ``braindecode.models`` exports, sorted."""
    use_torchaudio_standin()
    import braindecode.models as bm
    from braindecode.models.base import EEGModuleMixin

    return sorted(n for n, c in vars(bm).items()
                  if inspect.isclass(c) and issubclass(c, EEGModuleMixin) and c is not EEGModuleMixin)


def build_braindecode(name: str) -> nn.Module:
    """``Model(n_chans=129, n_outputs=1, n_times=200, sfreq=100)``, seeded, checked to map (2, 129, 200) to (2, 1).
    Raises whatever the constructor or the forward pass raises (the matrix records it)."""
    if name in BRAINDECODE_DOWNLOADS:
        raise RuntimeError(f"not built: {BRAINDECODE_DOWNLOADS[name]}")
    use_torchaudio_standin()
    import braindecode.models as bm

    torch.manual_seed(0)
    model = getattr(bm, name)(n_chans=129, n_outputs=1, n_times=200, sfreq=100).eval()
    with torch.no_grad():
        out = model(eeg_windows(2)[0])
    if tuple(out.shape) != (2, 1):
        raise ValueError(f"output shape {tuple(out.shape)}, expected (2, 1)")
    return model


def braindecode_case(name: str, model: nn.Module | None = None) -> ZooCase:
    built = model
    return ZooCase(f"braindecode/{name}", "braindecode",
                   (lambda: built) if built is not None else (lambda: build_braindecode(name)),
                   eeg_windows, EEG_DIAGNOSTICS, "regression", map_shapes=EEG)


# -- checks shared by the tests and the script ------------------------------------------------------------------
def weights_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16 else
                 v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def hook_count(model: nn.Module) -> int:
    """Forward/backward (pre-)hooks on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


ATTRIBUTION = {"saliency", "integrated_gradients", "layer_gradcam", "attention_rollout", "deeplift", "occlusion",
               "gradient_shap", "layer_integrated_gradients", "layer_conductance", "input_x_gradient", "smoothgrad"}


def check_record(name: str, rec: dict[str, Any], out_dir: Path, n: int,
                 shape: tuple[int, ...] | None) -> list[str]:
    """Problems with one diagnostic's record (empty when it is fine): an ``ok`` attribution must store finite maps of
    the documented shape that vary within every sample, unless a ``degenerate map`` flag says they do not."""
    problems: list[str] = []
    if rec["status"] != "ok":
        if not rec.get("reason"):
            problems.append(f"{name}: status {rec['status']} without a reason")
        return problems
    if name not in ATTRIBUTION:
        return problems
    path = Path(out_dir) / "arrays" / name / "attributions.npy"
    if not path.is_file():
        return [f"{name}: no attributions.npy"]
    maps = np.load(path)
    if maps.shape[0] != n:
        problems.append(f"{name}: {maps.shape[0]} maps for {n} samples")
    if shape is not None and tuple(maps.shape[1:]) != tuple(shape):
        problems.append(f"{name}: map shape {tuple(maps.shape[1:])}, expected {tuple(shape)}")
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    degenerate = any(f.startswith("degenerate map") for f in rec["flags"])
    informative = np.isfinite(flat).all() and bool(
        np.all(np.ptp(flat, axis=1) > 1e-4 * np.abs(flat).max(axis=1)))  # independent of cerebro's own check
    if not informative and not degenerate:
        problems.append(f"{name}: status ok with a non-finite or constant map and no 'degenerate map' flag")
    if informative and degenerate:
        problems.append(f"{name}: flagged degenerate but every map varies: {rec['flags']}")
    return problems


def verdict(rec: dict[str, Any] | None) -> str:
    """A table cell: ``ok``, ``flag: ...`` (ok with findings) or ``failed: reason`` / ``skipped: reason``."""
    if rec is None:
        return "-"
    if rec["status"] != "ok":
        return f"{rec['status']}: {rec.get('reason')}"
    return "ok" if not rec["flags"] else "flag: " + "; ".join(rec["flags"])


def matrix_row(case: ZooCase, summary: dict[str, Any], out: Path, n: int, changed: list[str],
               seconds: float) -> dict[str, Any]:
    """One row of ``docs/compatibility.md``: ``{diagnostic: [cell, note]}`` with cell ok | flag | failed | skipped |
    WRONG (a broken contract: see :func:`check_record`, or the user's model changed)."""
    cells: dict[str, list[str]] = {}
    for name, rec in summary["diagnostics"].items():
        problems = check_record(name, rec, out, n, case.map_shapes.get(name))
        problems += [f"the user's model changed: {changed}"] if changed else []
        text = verdict(rec)
        if problems:
            cells[name] = ["WRONG", "; ".join(problems)]
        else:
            kind, _, note = text.partition(": ")
            cells[name] = [kind, note]
    return {"seconds": seconds, "diagnostics": cells, "error": None}


def record_row(case: ZooCase, row: dict[str, Any]) -> None:
    """With ``CEREBRO_ZOO_RECORD=<file.jsonl>``, the tests append their rows for ``scripts/zoo_matrix.py --records``."""
    path = os.environ.get("CEREBRO_ZOO_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": case.name, "family": case.family, "row": row}) + "\n")


def versions() -> dict[str, str]:
    """Versions of the libraries the matrix ran with."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "timm", "transformers", "braindecode", "captum", "lightning", "grad-cam"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["torchaudio"] = "test stand-in (tests/zoo/standins)" if use_torchaudio_standin() else md.version("torchaudio")
    return out
