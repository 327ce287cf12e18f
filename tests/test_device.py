"""Issue 20: ``device: auto`` picks cuda, then mps, then cpu; an operation MPS lacks fails its diagnostic with a
reason that names the fix (the hardware is simulated: these machines have neither CUDA nor MPS)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import cerebro.runner.device as device_mod
from cerebro.diagnostics.base import Diagnostic
from cerebro.errors import CerebroConfigError
from cerebro.report.writer import ReportWriter
from cerebro.runner.device import auto_device, device_error_reason, resolve_device
from cerebro.runner.diagnose import _run_one

# the message PyTorch raises for an operator MPS does not implement (torch/_C, aten dispatch)
MPS_MESSAGE = ("The operator 'aten::_fft_r2c' is not currently implemented for the MPS device. If you want this op "
               "to be added in priority during the prototype phase of this feature, please comment on "
               "https://github.com/pytorch/pytorch/issues/77764. As a temporary fix, you can set the environment "
               "variable `PYTORCH_ENABLE_MPS_FALLBACK=1` to use the CPU as a fallback for this op.")


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"),
                                                       (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda: bool, mps: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: mps)
    assert auto_device().type == expected
    assert resolve_device("auto").type == expected


def test_unavailable_devices_fail_before_training_with_the_choices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    with pytest.raises(CerebroConfigError, match=r"Apple's MPS is not available.*device: auto picks cuda, then mps"):
        resolve_device("mps")
    with pytest.raises(CerebroConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(CerebroConfigError, match=r"None, 'auto' or a torch device .* got 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_device(None, nn.Linear(2, 1)).type == "cpu"  # None: the model's own device


def test_mps_unsupported_op_names_the_op_and_the_fix() -> None:
    mps = torch.device("mps")
    reason = device_error_reason(NotImplementedError(MPS_MESSAGE), mps)
    assert reason is not None and "aten::_fft_r2c is not supported on Apple's MPS" in reason
    assert "device: cpu" in reason and "PYTORCH_ENABLE_MPS_FALLBACK=1" in reason
    # other errors, and the same error on other devices, keep their own message
    assert device_error_reason(NotImplementedError(MPS_MESSAGE), torch.device("cpu")) is None
    assert device_error_reason(ValueError("bad shape"), mps) is None


class _NeedsFFT(Diagnostic):
    name = "needs_fft"

    def run(self, ctx, out) -> None:  # noqa: ANN001
        raise NotImplementedError(MPS_MESSAGE)  # injected fault: what an MPS run of spectral IG raises


def test_a_diagnostic_hitting_an_mps_gap_is_failed_with_the_fix(tmp_path) -> None:
    model = nn.Linear(3, 1)
    ctx = SimpleNamespace(observed={}, has_labels=True, model=model, device=torch.device("mps"))
    with pytest.warns(UserWarning, match="needs_fft"):
        rec = _run_one(_NeedsFFT({}), ctx, ReportWriter(tmp_path))
    assert rec["status"] == "failed"
    assert rec["reason"].startswith("NotImplementedError: aten::_fft_r2c is not supported on Apple's MPS")
    assert "PYTORCH_ENABLE_MPS_FALLBACK=1" in rec["reason"]
