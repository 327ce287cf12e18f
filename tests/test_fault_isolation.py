"""Nothing lost, nothing leaked: faults injected into one diagnostic (an exception, a CUDA OOM, a timeout, Ctrl-C)
leave the others and the files intact; re-running resumes; training errors are never masked; every registered
diagnostic leaves the caller's module, hooks and random states exactly as they were."""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cerebro
from cerebro import ModelAutopsy, register_diagnostic, run_autopsy
from cerebro.diagnostics.base import Diagnostic
from cerebro.registry import _REGISTRY
from tests.models import TinyConv1d
from tests.test_model_untouched import assert_untouched, hooks_left, snapshot
from tests.test_tokens import TinyViT

X, Y = torch.randn(12, 4, 32, generator=torch.Generator().manual_seed(0)), torch.randn(12, 1)


def _loader(x: torch.Tensor = X, y: torch.Tensor = Y) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


@pytest.fixture
def faulty():
    """Register diagnostics that fail on purpose (fault injection); unregistered afterwards."""
    made: list[str] = []

    def make(name: str, exc: BaseException, write_first: bool = True) -> None:
        class Faulty(Diagnostic):
            def run(self, ctx, out):  # noqa: ANN001, ANN201
                if write_first:
                    out.array("half_written", np.zeros(3))
                raise exc

        Faulty.__qualname__ = f"Faulty_{name}"
        register_diagnostic(name)(Faulty)
        made.append(name)

    yield make
    for name in made:
        _REGISTRY.pop(name, None)


def test_exception_and_cuda_oom_fail_only_their_diagnostic(tmp_path: Path, faulty) -> None:
    faulty("raises", ValueError("injected failure"))
    faulty("ooms", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    with pytest.warns(UserWarning):
        summary = run_autopsy(TinyConv1d().eval(), _loader(), output_dir=tmp_path,
                              diagnostics=["predictions", "raises", "ooms", "saliency"])
    d = summary["diagnostics"]
    assert summary["status"] == "partial" and summary["reason"] == "failed diagnostics: ['raises', 'ooms']"
    assert d["raises"]["reason"] == "ValueError: injected failure"
    assert d["ooms"]["reason"].startswith("OutOfMemoryError: CUDA out of memory")
    for name in ("raises", "ooms"):
        assert d[name]["artifacts"] == [f"{name}.traceback.txt"]  # the half-written array was removed
        assert not (tmp_path / "arrays" / name).exists()
        assert "Traceback" in (tmp_path / f"{name}.traceback.txt").read_text()
    assert d["predictions"]["status"] == d["saliency"]["status"] == "ok"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "partial"


def test_strict_mode_stops_at_the_first_failure(tmp_path: Path, faulty) -> None:
    faulty("raises", ValueError("injected failure"))
    with pytest.raises(cerebro.AutopsyFailure, match="failed diagnostics: \\['raises'\\]"), pytest.warns(UserWarning):
        run_autopsy(TinyConv1d().eval(), _loader(), output_dir=tmp_path, fail_on_error=True,
                    diagnostics=["raises", "predictions"])
    d = json.loads((tmp_path / "summary.json").read_text())["diagnostics"]
    assert d["predictions"] == {**d["predictions"], "status": "skipped",
                                "reason": "not run: strict mode stopped after 'raises' failed"}


class _Slow(nn.Module):
    """TinyConv1d whose passes with gradients take >= 200 ms (a stand-in for a big model on a slow device). The
    shared forward pass (no gradients) stays fast, so the budgets below are spent inside IG whatever the machine:
    12 samples of IG take >= 2.4 s, 8x the 0.3 s budget."""

    grad_passes = 0

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyConv1d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            type(self).grad_passes += 1  # on the class: the autopsy runs a copy of the module
            time.sleep(0.2)
        return self.net(x)


def test_time_budget_stops_a_long_diagnostic_and_the_rest_still_run(tmp_path: Path) -> None:
    model = _Slow().eval()
    _Slow.grad_passes = 0
    with pytest.warns(UserWarning, match="time budget"):
        summary = run_autopsy(model, _loader(), output_dir=tmp_path, batch_size=1, time_budget_s=0.3,
                              diagnostics=[{"integrated_gradients": {"n_steps": 64, "internal_batch_size": 64}},
                                           "predictions"])
    ig = summary["diagnostics"]["integrated_gradients"]
    assert ig["status"] == "failed"
    assert ig["reason"] == ("DiagnosticTimeout: integrated_gradients ran past its time budget of 0.3 s "
                            "(time_budget_s)")
    # stopped at the next check between blocks: at most the passes of one block ran (12 samples x 64 steps at 64
    # points per pass), counted rather than timed so that a loaded machine cannot fail it
    assert 1 <= _Slow.grad_passes <= 12
    assert summary["diagnostics"]["predictions"]["status"] == "ok"


def test_total_time_budget_skips_what_did_not_start(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        summary = run_autopsy(_Slow().eval(), _loader(), output_dir=tmp_path, batch_size=1, total_time_budget_s=0.5,
                              diagnostics=[{"integrated_gradients": {"n_steps": 64, "internal_batch_size": 64}},
                                           "predictions"])
    d = summary["diagnostics"]
    assert d["integrated_gradients"]["status"] == "failed" and "total time budget of 0.5 s" in \
        d["integrated_gradients"]["reason"]
    assert d["predictions"]["status"] == "skipped"
    assert d["predictions"]["reason"] == "not run: the autopsy's total time budget of 0.5 s is spent"


def test_keyboard_interrupt_keeps_what_finished(tmp_path: Path, faulty) -> None:
    faulty("interrupts", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_autopsy(TinyConv1d().eval(), _loader(), output_dir=tmp_path,
                    diagnostics=["predictions", "interrupts", "saliency"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert summary["reason"] == ("interrupted (KeyboardInterrupt) while running 'interrupts'; "
                                 "finished diagnostics are kept")
    d = summary["diagnostics"]
    assert d["predictions"]["status"] == "ok"
    assert all((tmp_path / a).is_file() for a in d["predictions"]["artifacts"])
    assert d["interrupts"]["status"] == d["saliency"]["status"] == "skipped"
    assert not (tmp_path / "arrays" / "interrupts").exists()  # its half-written file is gone
    assert (tmp_path / "report.html").is_file() and "interrupted" in (tmp_path / "report.html").read_text()


def test_rerun_resumes_finished_diagnostics_on_the_same_checkpoint(tmp_path: Path) -> None:
    model = TinyConv1d().eval()
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = tmp_path / "autopsy"
    first = run_autopsy(model, _loader(), output_dir=out, checkpoint=str(ckpt), diagnostics=["predictions", "saliency"])
    stamp = (out / "arrays" / "saliency" / "attributions.npy").stat().st_mtime_ns
    second = run_autopsy(model, _loader(), output_dir=out, checkpoint=str(ckpt),
                         diagnostics=["predictions", "saliency", "input_x_gradient"])
    d = second["diagnostics"]
    assert d["predictions"]["resumed"] is True and d["saliency"]["resumed"] is True
    assert d["predictions"]["metrics"] == first["diagnostics"]["predictions"]["metrics"]
    assert (out / "arrays" / "saliency" / "attributions.npy").stat().st_mtime_ns == stamp  # not recomputed
    assert d["input_x_gradient"]["status"] == "ok" and "resumed" not in d["input_x_gradient"]
    # other options, or another checkpoint file: computed again
    third = run_autopsy(model, _loader(), output_dir=out, checkpoint=str(ckpt),
                        diagnostics=[{"saliency": {"abs": False}}])
    assert "resumed" not in third["diagnostics"]["saliency"]
    torch.save({"state_dict": TinyConv1d().state_dict()}, ckpt)
    fourth = run_autopsy(model, _loader(), output_dir=out, checkpoint=str(ckpt), diagnostics=["predictions"])
    assert "resumed" not in fourth["diagnostics"]["predictions"]
    fresh = run_autopsy(model, _loader(), output_dir=out, checkpoint=str(ckpt), diagnostics=["predictions"],
                        resume=False)
    assert "resumed" not in fresh["diagnostics"]["predictions"]


def test_training_error_is_not_masked_and_no_autopsy_runs(eeg_dm, make_trainer, tmp_path: Path) -> None:
    from cerebro.demo import EEGRegressor
    from tests.conftest import N_CHANS, N_TIMES

    class Broken(EEGRegressor):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            raise RuntimeError("the user's own bug")

    cb = ModelAutopsy(diagnostics=["predictions"], output_dir=tmp_path / "autopsy")
    with pytest.raises(RuntimeError, match="^the user's own bug$"):
        make_trainer([cb]).fit(Broken(n_chans=N_CHANS, n_times=N_TIMES), datamodule=eeg_dm)
    assert cb.runs == [{"stage": "exception", "status": "not run",
                        "reason": "training stopped by RuntimeError: the user's own bug"}]
    assert not (tmp_path / "autopsy").exists()


def _case(name: str) -> tuple[nn.Module, torch.utils.data.DataLoader, dict, object]:
    if name == "attention_rollout":
        x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        return TinyViT(), _loader(x, torch.randint(0, 3, (6,))), {}, "classification"
    if name == "training_influence":  # TracIn: training data (the same loader) and two checkpoint files
        folder = Path(tempfile.mkdtemp(prefix="tracin-"))
        torch.manual_seed(0)
        model = TinyConv1d()
        for i in range(2):
            torch.save({"state_dict": {k: v + 0.01 * i for k, v in model.state_dict().items()}}, folder / f"c{i}.pt")
        return model, _loader(), {"checkpoints": str(folder / "c*.pt")}, "regression"
    opts = {"neuron_integrated_gradients": {"layer": "conv2", "neuron": [0, 3]},
            "sanity_checks": {"samples": 3, "layers": 2},
            "spectral_integrated_gradients": {"sfreq": 100.0, "n_steps": 4}}.get(name, {})
    torch.manual_seed(0)
    return TinyConv1d(), _loader(), opts, "regression"


BUILT_IN = sorted(n for n in cerebro.available_diagnostics() if _REGISTRY[n].__module__.startswith("cerebro."))


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_diagnostic_leaves_module_hooks_and_rng_untouched(tmp_path: Path, name: str) -> None:
    model, loader, opts, target = _case(name)
    model.train()
    before, hooks = snapshot(model), hooks_left(model)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    # sanity_checks and faithfulness read the maps of the run's attribution diagnostics
    diagnostics = [{name: opts}] if name not in ("sanity_checks", "faithfulness") else ["saliency", {name: opts}]
    train = {"train_dataloader": _loader()} if name == "training_influence" else {}
    summary = run_autopsy(model, loader, output_dir=tmp_path, diagnostics=diagnostics, target=target, max_samples=6,
                          **train)
    assert summary["diagnostics"][name]["status"] == "ok", summary["diagnostics"][name]["reason"]
    assert_untouched(model, before, hooks)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert torch.backends.mha.get_fastpath_enabled()
    if torch.cuda.is_available():
        assert torch.cuda.memory_allocated() == 0
