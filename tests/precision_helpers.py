"""Shared by the precision tests (issue 20): the tanh MLP whose bf16 rounding moves completeness, braindecode's
EEGNeX, and :class:`Clocked`, a plan driven by an injected clock, so that ``auto``'s cost decisions test the logic and
not this machine's speed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cerebro.engine.precision as precision
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.precision import PrecisionPlan
from cerebro.targets import RegressionTarget, ScalarForward

CPU = torch.device("cpu")
TOL = 0.01


def _case(seed: int = 2, n: int = 32) -> tuple[ScalarForward, torch.Tensor, torch.Tensor]:
    """A tanh MLP whose bf16 rounding moves completeness by 1-10% on some samples (sum(attr) cancels)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1)).eval()
    x = torch.randn(n, 64) * 2
    return ScalarForward(model, RegressionTarget()), x, torch.zeros_like(x)


def _policy() -> ChunkPolicy:
    return ChunkPolicy(64, None, CPU, 64)


def _rel(res) -> torch.Tensor:  # noqa: ANN001
    return res.delta.abs() / res.gap.abs()


class Clocked(PrecisionPlan):
    """A plan whose passes cost a fixed number of seconds per point in each precision (the work itself is real)."""

    def __init__(self, requested: str, cost: dict[str, float]) -> None:
        super().__init__(requested, CPU)
        self.cost = cost

    def timed(self, dtype, points, fn):  # noqa: ANN001, ANN201
        out = fn()
        self.record(dtype, points, points * self.cost["fp32" if dtype in (None, torch.float32) else self.candidate])
        return out

    def total(self) -> float:
        return sum(self.points[k] * self.cost[k] for k in self.points)

    def observe_rates(self, dtype, rates):  # noqa: ANN001, ANN201
        """The clock prices the passes; the chunk policies' wall-clock throughput is not a measure here."""


def _fake_bf16_hardware(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(precision, "reduced_candidate", lambda device: ("bf16", "mocked bf16 hardware"))


def _eegnex() -> ScalarForward:
    from tests.zoo.models import build_braindecode, use_torchaudio_standin

    use_torchaudio_standin()  # braindecode imports torchaudio, which has no release for this torch (tests only)
    pytest.importorskip("braindecode")
    return ScalarForward(build_braindecode("EEGNeX"), RegressionTarget())
