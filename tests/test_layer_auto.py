"""``layer: auto`` on real third-party CNNs never lands on a layer with a single spatial/time position.

braindecode's ShallowFBCSPNet, Deep4Net and EEGNet end in ``final_layer.conv_classifier`` whose output is 1x1, and
torchvision's resnet18 ``layer4`` is 1x1 on 32x32 images: a Grad-CAM map of such a layer, upsampled onto the input,
is constant by construction. Auto walks back to the last main-path convolution with more than one position and
says which and why in ``metrics.layer_notes``; a user-named 1x1 layer keeps the user's choice and is flagged with
a better layer named. Random weights, tiny sizes, nothing downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.autopsy_helpers import autopsy, load_array

sys.path.insert(0, str(Path(__file__).parent / "zoo" / "standins"))  # braindecode imports torchaudio (see there)
braindecode_models = pytest.importorskip("braindecode.models")
torchvision = pytest.importorskip("torchvision")

N_CHANS, N_TIMES = 8, 200


def _eeg(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = getattr(braindecode_models, name)
    return cls(n_chans=N_CHANS, n_outputs=1, n_times=N_TIMES, sfreq=100).eval()


def _check_map(maps: np.ndarray, n: int) -> None:
    assert maps.shape[0] == n and np.isfinite(maps).all()
    flat = maps.reshape(n, -1)
    assert (np.ptp(flat, axis=1) > 1e-3 * np.abs(flat).max(axis=1)).all()  # a real map, not a constant


@pytest.mark.parametrize("name", ["ShallowFBCSPNet", "Deep4Net", "EEGNet"])
def test_braindecode_auto_walks_back_from_the_1x1_classifier(tmp_path, name: str) -> None:
    model = _eeg(name)
    x = torch.randn(3, N_CHANS, N_TIMES)
    summary = autopsy(model, (x, torch.randn(3, 1)), tmp_path, ["layer_gradcam"])
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert m["layer"] != "final_layer.conv_classifier" and "conv" in m["layer"].rsplit(".", 1)[-1]
    note = m["layer_notes"][0]
    assert "'final_layer.conv_classifier'" in note and "single spatial/time position" in note
    assert f"walked back to '{m['layer']}'" in note
    assert not any("degenerate" in f for f in rec["flags"]), rec["flags"]
    _check_map(load_array(tmp_path, "layer_gradcam", "attributions"), 3)


def test_resnet18_on_small_images_walks_back_from_layer4(tmp_path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(3, 3, 32, 32)
    summary = autopsy(model, (x,), tmp_path, ["layer_gradcam"], target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["status"] == "ok", rec["reason"]
    assert rec["metrics"]["layer"] == "layer3.1.conv2"  # 2x2 on 32x32 inputs; layer4's convs are 1x1
    assert "'layer4.1.conv2' outputs [512, 1, 1]" in rec["metrics"]["layer_notes"][0]
    maps = load_array(tmp_path, "layer_gradcam", "attributions")
    assert maps.shape == (3, 1, 32, 32)
    _check_map(maps, 3)


def test_resnet18_on_full_size_images_keeps_layer4(tmp_path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    summary = autopsy(model, (torch.randn(2, 3, 64, 64),), tmp_path, ["layer_gradcam"], target="classification")
    m = summary["diagnostics"]["layer_gradcam"]["metrics"]
    assert m["layer"] == "layer4.1.conv2" and "walked back" not in m["layer_notes"][0]


def test_user_named_1x1_layer_is_flagged_with_a_better_layer(tmp_path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    summary = autopsy(model, (torch.randn(3, 3, 32, 32),), tmp_path, [{"layer_gradcam": {"layer": "layer4"}}],
                      target="classification")
    rec = summary["diagnostics"]["layer_gradcam"]
    assert rec["metrics"]["layer"] == "layer4"
    flag = [f for f in rec["flags"] if "constant by construction" in f]
    assert flag and "single spatial/time position [512, 1, 1]" in flag[0] and "'layer3.1.conv2'" in flag[0], rec


def test_eeg_named_classifier_conv_is_flagged(tmp_path) -> None:
    summary = autopsy(_eeg("ShallowFBCSPNet"), (torch.randn(3, N_CHANS, N_TIMES), torch.randn(3, 1)), tmp_path,
                      [{"layer_gradcam": {"layer": "final_layer.conv_classifier"}}])
    rec = summary["diagnostics"]["layer_gradcam"]
    flag = [f for f in rec["flags"] if "constant by construction" in f]
    assert flag and "'final_layer.conv_classifier'" in flag[0] and "e.g. 'conv_time_spat" in flag[0], rec
