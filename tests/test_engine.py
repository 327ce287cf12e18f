"""The batched engine: IG equal to Captum at equal steps, adaptive steps, chunk calibration, OOM halving, flat storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import cerebro.engine.chunking as chunking
from cerebro.engine.chunking import ChunkPolicy, clear_cache
from cerebro.engine.integrated import integrated_gradients
from cerebro.engine.store import RowTensor, RowWriter
from cerebro.samples import collect_samples
from cerebro.targets import ClassificationTarget, RegressionTarget, ScalarForward
from tests.autopsy_helpers import autopsy, load_array
from tests.models import TinyConv1d


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 12, 4)).eval()


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                                    "riemann_trapezoid"])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_engine_equals_captum_at_equal_steps(method: str, chunk: int) -> None:
    model = _classifier()
    x = torch.randn(6, 3, 12)
    base = torch.randn(1, 3, 12).expand_as(x)
    index = torch.tensor([0, 1, 2, 3, 0, 1])
    fwd = ScalarForward(model, ClassificationTarget())
    res = integrated_gradients(fwd, x, base, index, 20, method, ChunkPolicy(chunk, None, torch.device("cpu"), chunk))
    ref, delta = CaptumIG(model).attribute(x, baselines=base, target=index, n_steps=20, method=method,
                                           return_convergence_delta=True)
    torch.testing.assert_close(res.attributions, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.delta, delta.float(), atol=1e-5, rtol=1e-4)
    assert res.evaluations == 6 * 20 and res.steps.tolist() == [20] * 6


@pytest.mark.parametrize("method,precision", [("nested", "auto"), ("nested", "bf16"), ("gausslegendre", "fp32")])
def test_an_empty_block_gives_empty_results(method: str, precision: str) -> None:
    """No sample: empty maps and per-sample arrays, no pass (it crashed in the reduced scheme's reshape)."""
    from cerebro.engine.precision import PrecisionPlan

    fwd = ScalarForward(_classifier(), ClassificationTarget())
    x = torch.zeros(0, 3, 12)
    plan = PrecisionPlan(precision, torch.device("cpu"))
    res = integrated_gradients(fwd, x, x, torch.zeros(0, dtype=torch.long), None, method,
                               ChunkPolicy(8, None, torch.device("cpu")), plan=plan)
    assert res.attributions.shape == (0, 3, 12) and res.gap.shape == res.delta.shape == res.steps.shape == (0,)
    assert res.evaluations == 0 and sum(plan.points.values()) == 0


def test_adaptive_steps_reach_the_tolerance_per_sample() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).eval()
    x = torch.randn(10, 8) * 3
    base = torch.zeros_like(x)
    fwd = ScalarForward(model, RegressionTarget())
    tol = 0.01
    res = integrated_gradients(fwd, x, base, None, None, "riemann_trapezoid",
                               ChunkPolicy(64, None, torch.device("cpu")), tolerance=tol, max_steps=1024)
    assert set(res.steps.tolist()) <= {16, 32, 64, 128, 256, 512, 1024}
    assert (res.delta.abs() <= tol * res.gap.abs()).all()
    assert res.evaluations == int(sum(sum(s for s in (16, 32, 64, 128, 256, 512, 1024) if s <= n)
                                      for n in res.steps.tolist()))
    # the same samples at the steps each one ended with, computed directly, give the same attributions
    for n in set(res.steps.tolist()):
        sel = res.steps == n
        direct = integrated_gradients(fwd, x[sel], base[sel], None, n, "riemann_trapezoid",
                                      ChunkPolicy(64, None, torch.device("cpu")))
        torch.testing.assert_close(res.attributions[sel], direct.attributions, atol=1e-6, rtol=1e-5)


def test_adaptive_ig_diagnostic_reports_steps_and_flags_non_converged(tmp_path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 1))
    x = torch.randn(12, 6) * 4
    summary = autopsy(model, (x,), tmp_path, [{"integrated_gradients": {
        "n_steps": "auto", "delta_tolerance": 1e-7, "max_steps": 32, "method": "riemann_right"}}])
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok"
    steps = load_array(tmp_path, "integrated_gradients", "steps")
    assert steps.shape == (12,) and steps.max() == 32 and rec["metrics"]["n_steps"] == "auto"
    assert rec["metrics"]["evaluations"] == int(sum(16 + (32 if s == 32 else 0) for s in steps))
    assert any("still above tolerance at max_steps=32" in f for f in rec["flags"])


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def perf_counter(self) -> float:
        return self.t


def test_calibration_keeps_the_fastest_size_and_caches_it(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(chunking, "time", clock)
    clear_cache()
    # throughput (points/s) peaks at 64 points per pass
    cost = {4: 1.0, 8: 1.0, 16: 1.0, 32: 1.5, 64: 2.0, 128: 8.0, 256: 20.0}
    seen: list[int] = []

    def work(size: int) -> int:
        seen.append(size)
        clock.t += cost.get(size, size * 0.1)
        return size

    policy = ChunkPolicy(256, ("model", (3,), "cpu"), torch.device("cpu"))
    done = 0
    while done < 2000:
        size, _ = policy.run(2000 - done, work)
        done += size
    assert seen[:6] == [4, 8, 16, 32, 64, 128]  # stops trying once throughput fell below 90% of the best
    assert set(seen[6:]) <= {64} | {2000 - sum(seen[:-1])}
    assert policy.chosen == 64
    again = ChunkPolicy(256, ("model", (3,), "cpu"), torch.device("cpu"))
    assert again.chosen == 64 and again.next_size(1000) == 64  # cached: no calibration the second time
    clear_cache()


def test_cuda_oom_halves_the_chunk_and_retries() -> None:
    sizes: list[int] = []

    def work(size: int) -> int:
        sizes.append(size)
        if size > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return size

    policy = ChunkPolicy(64, None, torch.device("cpu"), fixed=64)
    size, result = policy.run(100, work)
    assert (size, result) == (8, 8)
    assert sizes == [64, 32, 16, 8] and policy.oom_halvings == 3 and policy.limit == 8

    def always(size: int) -> int:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        ChunkPolicy(4, None, torch.device("cpu"), fixed=4).run(10, always)


def _oom_above(monkeypatch, limit: int) -> None:  # noqa: ANN001
    """Fault injection: a gradient pass over more than ``limit`` points raises CUDA's out-of-memory error."""
    real_forward = ScalarForward.forward

    def flaky(self, inp, index=None):  # noqa: ANN001, ANN202
        if torch.is_grad_enabled() and inp.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, inp, index)

    monkeypatch.setattr(ScalarForward, "forward", flaky)


def test_oom_in_the_ig_pass_recovers_with_equal_results(tmp_path, monkeypatch) -> None:
    model = TinyConv1d(n_chans=4, n_times=32)
    x = torch.randn(8, 4, 32)
    ref = autopsy(model, (x,), tmp_path / "ref", [{"integrated_gradients": {"n_steps": 8, "internal_batch_size": 64}}])
    assert ref["diagnostics"]["integrated_gradients"]["status"] == "ok"
    _oom_above(monkeypatch, 16)
    summary = autopsy(model, (x,), tmp_path / "oom", [{"integrated_gradients": {"n_steps": 8,
                                                                                "internal_batch_size": 64}}])
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok" and rec["metrics"]["oom_halvings"] == 2 and rec["metrics"]["limit_points"] == 16
    # chunks of 16 vs 64 points: other float32 kernels sum in another order (~1e-6 relative per value)
    np.testing.assert_allclose(load_array(tmp_path / "oom", "integrated_gradients", "attributions"),
                               load_array(tmp_path / "ref", "integrated_gradients", "attributions"), rtol=1e-5,
                               atol=1e-6)


def test_row_files_round_trip_as_plain_npy(tmp_path) -> None:
    a = np.random.default_rng(0).standard_normal((9, 2, 5)).astype(np.float32)
    with RowWriter(tmp_path / "a.npy", a.shape) as w:
        w.write(a[6:], start=6)
        w.write(torch.from_numpy(a[:6]), start=0)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", mmap_mode="r")[3], a[3])
    t = RowTensor(tmp_path / "a.npy")
    assert t.shape == (9, 2, 5) and t.dtype == torch.float32
    np.testing.assert_array_equal(t[2:7].numpy(), a[2:7])
    with pytest.raises(ValueError, match="do not fit"):
        RowWriter(tmp_path / "b.npy", (2, 3)).write(np.zeros((3, 3)))


@pytest.mark.parametrize("sampling", ["first", "random"])
def test_spilled_samples_equal_in_memory_samples(tmp_path, sampling: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, y, s = torch.randn(50, 3, 7, generator=g), torch.randn(50, 1, generator=g), torch.arange(50)
    loader = DataLoader(TensorDataset(x, y, s), batch_size=8)
    mem = collect_samples(loader, 20, sampling=sampling, seed=3)
    disk = collect_samples(loader, 20, sampling=sampling, seed=3, spill_dir=tmp_path, spill_bytes=0)
    assert isinstance(disk.x, RowTensor) and isinstance(mem.x, torch.Tensor)
    np.testing.assert_array_equal(mem.indices, disk.indices)
    torch.testing.assert_close(disk.x[0:20], mem.x)
    torch.testing.assert_close(disk.x[0:20], x[torch.from_numpy(mem.indices)])
    assert disk.metadata["field_2"] == mem.metadata["field_2"] == mem.indices.tolist()
    if sampling == "random":
        assert mem.indices.tolist() != list(range(20)) and list(mem.indices) == sorted(mem.indices)


def test_autopsy_leaves_no_spill_files(tmp_path, monkeypatch) -> None:
    import cerebro.samples as samples_mod

    real = samples_mod.collect_samples
    monkeypatch.setattr("cerebro.runner.prepare.collect_samples",
                        lambda *a, **k: real(*a, **{**k, "spill_bytes": 0}))
    model = TinyConv1d(n_chans=4, n_times=32)
    summary = autopsy(model, (torch.randn(10, 4, 32), torch.randn(10, 1)), tmp_path,
                      ["predictions", {"integrated_gradients": {"n_steps": 4}}])
    assert summary["status"] == "ok"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".samples-")]


def test_oom_in_gradcam_halves_and_recovers(tmp_path, monkeypatch) -> None:
    model = TinyConv1d(n_chans=4, n_times=32)
    x = torch.randn(12, 4, 32)
    ref = autopsy(model, (x,), tmp_path / "ref", ["layer_gradcam"], batch_size=12)
    _oom_above(monkeypatch, 3)
    summary = autopsy(model, (x,), tmp_path / "oom", ["layer_gradcam"], batch_size=12)
    assert summary["diagnostics"]["layer_gradcam"]["status"] == "ok"
    # batches of 3 vs 12: other float32 kernels sum in another order (~1e-6 relative per value)
    np.testing.assert_allclose(load_array(tmp_path / "oom", "layer_gradcam", "attributions"),
                               load_array(tmp_path / "ref", "layer_gradcam", "attributions"), rtol=1e-5, atol=1e-6)
    assert ref["diagnostics"]["layer_gradcam"]["status"] == "ok"
