"""Fixtures of the model-zoo matrix.

braindecode imports ``torchaudio`` at module level, and torchaudio has no release for the torch versions cerebro is
tested on (torch >= 2.12): when a real torchaudio is not importable, the test-only stand-in in ``standins/`` is put
on ``sys.path`` (see its docstring; none of the models in the matrix calls torchaudio in its forward pass).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cerebro.diagnostics.attribution import AttributionDiagnostic
from tests.autopsy_helpers import autopsy
from tests.zoo.models import (ZooCase, check_record, hook_count, matrix_row, record_row, use_torchaudio_standin,
                              weights_hash)

use_torchaudio_standin()

#: Samples per case: enough for per-sample checks, few enough for the CPU budget of the whole matrix.
N = 4


@dataclass
class CaseRun:
    """One case run through ``run_autopsy``: the model (as the user holds it), inputs, summary and output folder."""

    case: ZooCase
    model: nn.Module
    tensors: tuple[torch.Tensor, ...]
    summary: dict[str, Any]
    out: Path
    #: What of the user's model changed (weights, hooks, mode, requires_grad): must stay empty.
    changed: list[str]

    def rec(self, name: str) -> dict[str, Any]:
        return self.summary["diagnostics"][name]

    def problems(self, name: str) -> list[str]:
        return check_record(name, self.rec(name), self.out, N, self.case.map_shapes.get(name))


def assert_case_ok(run: CaseRun) -> None:
    """Every diagnostic ok, maps of the documented shape, finite and varying (or flagged), model untouched."""
    assert run.changed == [], f"the autopsy changed the user's model: {run.changed}"
    for name, rec in run.summary["diagnostics"].items():
        assert rec["status"] == "ok", (name, rec["reason"])
        assert run.problems(name) == []


def run_case(case: ZooCase, out: Path, model: nn.Module | None = None, diagnostics: Any = None,
             **overrides: Any) -> CaseRun:
    """Build (unless given) and run ``case``; records what of the model changed (weights hash, hooks,
    train/eval mode, requires_grad flags)."""
    t0 = time.perf_counter()
    model = case.build() if model is None else model
    tensors = case.make_inputs(N)
    before = (weights_hash(model), hook_count(model), model.training,
              [p.requires_grad for p in model.parameters()])
    kwargs = {"target": case.target, **case.kwargs, **overrides}
    summary = autopsy(model, tensors, out, diagnostics or case.diagnostics, **kwargs)
    after = (weights_hash(model), hook_count(model), model.training, [p.requires_grad for p in model.parameters()])
    changed = [what for what, b, a in zip(("weights", "hooks", "mode", "requires_grad"), before, after) if b != a]
    if diagnostics is None and not overrides:  # the matrix case itself: a row of docs/compatibility.md
        record_row(case, matrix_row(case, summary, out, N, changed, time.perf_counter() - t0))
    return CaseRun(case, model, tensors, summary, out, changed)


@pytest.fixture(autouse=True, scope="session")
def one_sample_figure() -> Any:
    """Draw one per-sample figure per diagnostic instead of four: on EEG windows each figure costs about a CPU
    second (three quarters of a braindecode case), and the matrix checks the arrays, not the pictures."""
    old = AttributionDiagnostic.sample_figures
    AttributionDiagnostic.sample_figures = 1
    yield
    AttributionDiagnostic.sample_figures = old


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")
