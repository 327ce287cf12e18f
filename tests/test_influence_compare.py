"""Issue 22: ``compare`` shows how training influence shifts between two runs (two real trainings, the callback's
own snapshots; the second with 10% of its training labels flipped)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from torch.utils.data import DataLoader, TensorDataset

from cerebro.compare import compare_autopsies
from tests.test_training_influence import Net, autopsy_cb, blobs, trainer


def _run(tmp: Path, name: str, flip: np.ndarray | None = None) -> Path:
    pl.seed_everything(0, verbose=False)
    x, y = blobs(200, 1)
    if flip is not None:
        y = y.clone()
        y[flip] = (y[flip] + 1) % 3  # planted label noise
    xv, yv = blobs(40, 2)
    out = tmp / name
    trainer(tmp / f"{name}_fit", [autopsy_cb(out, {"mode": "last_layer", "k": 5})], epochs=3).fit(
        Net(), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), DataLoader(TensorDataset(xv, yv), 40))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("influence_compare")
    flip = np.random.default_rng(0).choice(200, size=20, replace=False)
    return _run(tmp, "clean"), _run(tmp, "noisy", flip), flip


def test_compare_of_a_run_with_itself_is_identical(runs, tmp_path: Path) -> None:
    clean, _, _ = runs
    ti = compare_autopsies(clean, clean, tmp_path / "same")["training_influence"]
    assert ti["compared"] and ti["reason"] is None and ti["n_train_a"] == ti["n_train_b"] == 200
    assert ti["top_overlap"] == 1.0 and ti["only_a_top"] == [] and ti["only_b_top"] == []
    assert ti["self_influence_spearman"] == pytest.approx(1.0)
    assert ti["proponent_overlap_mean"] == 1.0 and ti["samples_compared"] == 40


def test_compare_shows_the_flipped_labels_rising_to_the_top(runs, tmp_path: Path) -> None:
    clean, noisy, flip = runs
    result = compare_autopsies(clean, noisy, tmp_path / "shift")
    ti = result["training_influence"]
    assert ti["compared"] and ti["top_k"] >= 10
    # the most self-influential training samples of the noisy run are mostly its flipped labels, which the clean
    # run did not rank at the top
    new_top = set(ti["only_b_top"])
    assert len(new_top) >= ti["top_k"] // 2
    assert len(new_top & set(flip.tolist())) / len(new_top) >= 0.5
    assert ti["self_influence_spearman"] < 0.9 and 0 <= ti["proponent_overlap_mean"] < 1
    html = (tmp_path / "shift" / "compare.html").read_text()
    assert "<h2>Training influence</h2>" in html and "proponents in common per studied sample" in html


def test_compare_without_influence_on_one_side_says_so(runs, tmp_path: Path) -> None:
    import json
    import shutil

    clean, _, _ = runs
    other = tmp_path / "no_influence"
    shutil.copytree(clean, other)
    summary = json.loads((other / "summary.json").read_text())
    summary["diagnostics"]["training_influence"]["status"] = "failed"  # injected: the diagnostic failed there
    (other / "summary.json").write_text(json.dumps(summary))
    ti = compare_autopsies(clean, other, tmp_path / "half")["training_influence"]
    assert ti == {"compared": False, "reason": "training_influence did not run ok in both autopsies"}
