"""Issue 22: training_influence under DDP: ranks split the training batches, rank 0 joins them into the result a single
process computes (an engine-level equivalence, and a real 2-process gloo run of the callback)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from cerebro.engine.influence import PerSampleLoss, TracIn, merge_results
from tests.test_training_influence import Net, _two, blobs


def _tracin(mode: str) -> tuple[TracIn, list, DataLoader]:
    torch.manual_seed(0)
    model = Net().eval()
    loss = PerSampleLoss(model.loss_fn, "loss_fn")
    tracin = TracIn(model, _two(model), loss, mode, torch.device("cpu"), "head" if mode == "last_layer" else None)
    tracin.chunk = 7  # chunks that do not align with the batches
    x, y = blobs(70, 3)
    test = tracin.embed_all(x[:12], y[:12], 12)
    return tracin, test, DataLoader(TensorDataset(x, y), batch_size=16)  # 5 batches, the last one short


def test_rank_shares_join_into_the_single_process_result() -> None:
    for mode in ("last_layer", "exact"):
        tracin, test, loader = _tracin(mode)
        single = tracin.run(test, loader, 5)
        parts = [tracin.run(test, loader, 5, rank=r, world=3) for r in range(3)]
        for r, part in enumerate(parts):  # each rank computed exactly its batches (b % 3 == r), NaN elsewhere
            mine = np.concatenate([np.full(len(b[0]), (i % 3) == r) for i, b in enumerate(loader)])
            assert np.array_equal(~np.isnan(part.self_influence), mine)
        joined = merge_results(parts, 5)
        assert joined.n_train == single.n_train == 70
        # the same float64 numbers, gathered from other chunks: equal up to float32 summation order
        np.testing.assert_allclose(joined.self_influence, single.self_influence, rtol=1e-6, atol=0)
        np.testing.assert_allclose(joined.proponent_scores, single.proponent_scores, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(joined.opponent_scores, single.opponent_scores, rtol=1e-6, atol=1e-12)
        assert (joined.proponents == single.proponents).mean() > 0.95  # ties may swap positions
        assert (joined.opponents == single.opponents).mean() > 0.95


def test_ddp_callback_splits_the_training_set_between_ranks(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    x, y = blobs(96, 1)
    xv, yv = blobs(24, 2)
    autopsy = ModelAutopsy(output_dir=tmp_path / "ddp", max_samples=24, checkpoint="live", target="classification",
                           diagnostics=["predictions", {"training_influence": {"k": 4}}])
    trainer = pl.Trainer(strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=120)), accelerator="cpu",
                         devices=2, max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         callbacks=[autopsy])
    trainer.fit(Net(), DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=8))
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    rec = summary["diagnostics"]["training_influence"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert m["n_train"] == 96 and m["checkpoints"] == 3
    assert m["train_samples_per_rank"] == [48, 48]  # 6 batches of 16, alternating ranks
    arrays = tmp_path / "ddp" / "arrays" / "training_influence"
    si = np.load(arrays / "self_influence.npy")
    assert si.shape == (96,) and np.isfinite(si).all() and (si >= 0).all()  # every rank's share filled in
    pro = np.load(arrays / "proponents.npy")
    assert pro.shape == (24, 4) and pro.min() >= 0 and pro.max() < 96
    # the shares come from both ranks: proponents drawn from batches of each parity
    batch_parity = (pro // 16) % 2
    assert set(np.unique(batch_parity).tolist()) == {0, 1}
