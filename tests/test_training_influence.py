"""training_influence (TracIn): agreement with Captum, planted label noise and shortcuts, bad input, training unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.influence import TracInCP, TracInCPFast
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import ModelAutopsy
from cerebro.engine.influence import Snapshot
from cerebro.engine.influence_data import KEY, TrainingData, fixed_order
from cerebro.errors import CerebroConfigError
from cerebro.runner import build_config, execute

# Two float32 paths (ours, Captum's) summing the same products in another order: ~1e-6 relative; 1e-5 is the issue's.
RTOL = 1e-5


class Net(pl.LightningModule):
    """``(B, d) -> (B, n_out)``: one hidden tanh layer and a linear head; its own loss as ``loss_fn``."""

    def __init__(self, d: int = 8, hidden: int = 16, n_out: int = 3, lr: float = 0.2, regression: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, n_out)
        self.loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))

    def training_step(self, batch, _i):  # noqa: ANN001, ANN201
        x, y = batch
        return self.loss_fn(self(x), y)

    def validation_step(self, batch, _i):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("val_loss", self.loss_fn(self(x), y))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SaveStates(Callback):
    """Full state dicts with the epoch's learning rate, every epoch (Captum's checkpoints)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.paths = folder, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        path = self.folder / f"epoch{trainer.current_epoch:02d}.pt"
        torch.save({"state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                    "learning_rate": trainer.optimizers[0].param_groups[0]["lr"]}, path)
        self.paths.append(str(path))


def _load(model: nn.Module, path: str) -> float:
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["state_dict"])
    return float(ckpt["learning_rate"])


def blobs(n: int, seed: int, d: int = 8, classes: int = 3, spread: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + spread * torch.randn(n, d, generator=g), y


def trainer(tmp_path: Path, callbacks: list, epochs: int = 4) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, callbacks=callbacks)


def autopsy_cb(out: Path, options: dict, max_samples: int = 64, **kw) -> ModelAutopsy:  # noqa: ANN003
    return ModelAutopsy(diagnostics=["predictions", {"training_influence": options}], checkpoint="live",
                        target=kw.pop("target", "classification"), output_dir=out, max_samples=max_samples, **kw)


def arrays(out: Path) -> dict[str, np.ndarray]:
    folder = out / "arrays" / "training_influence"
    return {p.stem: np.load(p) for p in folder.glob("*.npy")}


def record(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["diagnostics"]["training_influence"]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(b).max())


def run_direct(model: nn.Module, train: DataLoader, test: DataLoader, out: Path, options: dict,
               snapshots: list[Snapshot] | None = None, target: str = "classification",
               give_data: bool = True) -> dict:
    """The autopsy engine with the training data handed over as the callback hands it (no training)."""
    config = build_config(["predictions", {"training_influence": options}], target, max_samples=64)
    fixed, idx, note = fixed_order(train)
    extras = {KEY: TrainingData(fixed, config.batch, idx, snapshots or [], "test", note)} if give_data else None
    return execute(model, test, config, out, extras=extras)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run: the callback in last_layer mode (head snapshots every epoch) and full state files every epoch."""
    tmp = tmp_path_factory.mktemp("tracin")
    pl.seed_everything(0, verbose=False)
    x, y = blobs(200, 1)
    xv, yv = blobs(40, 2)
    model = Net()
    saver = SaveStates(tmp)
    out = tmp / "autopsy"
    trainer(tmp, [saver, autopsy_cb(out, {"mode": "last_layer", "k": 5})], epochs=3).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), DataLoader(TensorDataset(xv, yv), 40))
    return {"tmp": tmp, "model": model.eval(), "x": x, "y": y, "xv": xv, "yv": yv, "paths": saver.paths, "out": out}


def _captum_fast(model: nn.Module, t: dict, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    train = DataLoader(TensorDataset(t["x"], t["y"]), batch_size=32)
    tracin = TracInCPFast(copy.deepcopy(model), "head", train, paths, _load, nn.CrossEntropyLoss(reduction="sum"),
                          batch_size=32)
    return tracin.influence((t["xv"], t["yv"])), tracin.self_influence()


def _check_against(arr: dict[str, np.ndarray], scores: torch.Tensor, selfs: torch.Tensor) -> None:
    scores = scores.detach().numpy()
    assert rel_err(arr["self_influence"], selfs.detach().numpy()) <= RTOL
    mine = np.take_along_axis(scores, arr["proponents"], 1)
    assert rel_err(arr["proponent_scores"], mine) <= RTOL
    assert rel_err(arr["opponent_scores"], np.take_along_axis(scores, arr["opponents"], 1)) <= RTOL
    k = arr["proponents"].shape[1]
    np.testing.assert_allclose(arr["proponent_scores"], -np.sort(-scores, 1)[:, :k], rtol=0, atol=RTOL * np.abs(scores).max())
    np.testing.assert_allclose(arr["opponent_scores"], np.sort(scores, 1)[:, :k], rtol=0, atol=RTOL * np.abs(scores).max())


def test_callback_last_layer_equals_captum_fast(trained: dict) -> None:
    """The callback's head snapshots (features of the final model) = TracInCPFast on files holding that model with
    each epoch's head."""
    rec, arr = record(trained["out"]), arrays(trained["out"])
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert (m["mode"], m["checkpoints"], m["n_train"], m["k"]) == ("last_layer", 3, 200, 5)
    assert arr["proponents"].shape == (40, 5) and arr["opponent_scores"].shape == (40, 5)
    np.testing.assert_array_equal(arr["train_indices"], np.arange(200))
    assert m["top_self_influence"] == np.argsort(-arr["self_influence"], kind="stable")[:20].tolist()
    final = trained["model"].state_dict()
    hybrid = []
    for i, p in enumerate(trained["paths"]):
        ck = torch.load(p)
        state = {k: (v if k.startswith("head.") else final[k]) for k, v in ck["state_dict"].items()}
        torch.save({"state_dict": state, "learning_rate": ck["learning_rate"]}, trained["tmp"] / f"hybrid{i}.pt")
        hybrid.append(str(trained["tmp"] / f"hybrid{i}.pt"))
    _check_against(arr, *_captum_fast(trained["model"], trained, hybrid))
    assert any("strongest proponents" in f for f in rec["flags"])
    assert any(a.endswith("training_influence_worst_cases.png") for a in rec["artifacts"])


@pytest.mark.parametrize("mode", ["last_layer", "exact"])
def test_checkpoint_files_equal_captum(trained: dict, tmp_path: Path, mode: str) -> None:
    """Checkpoint files given as a glob: last_layer = TracInCPFast, exact = TracInCP, within 1e-5."""
    t = trained
    glob = str(t["tmp"] / "epoch*.pt")
    run_direct(t["model"], DataLoader(TensorDataset(t["x"], t["y"]), 50, shuffle=True),
               DataLoader(TensorDataset(t["xv"], t["yv"]), 40), tmp_path, {"mode": mode, "k": 7, "checkpoints": glob})
    rec, arr = record(tmp_path), arrays(tmp_path)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["metrics"]["checkpoints"] == 3 and rec["metrics"]["mode"] == mode
    if mode == "last_layer":
        scores, selfs = _captum_fast(t["model"], t, t["paths"])
    else:
        tracin = TracInCP(copy.deepcopy(t["model"]), DataLoader(TensorDataset(t["x"], t["y"]), batch_size=32),
                          t["paths"], _load, loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=32)
        scores, selfs = tracin.influence((t["xv"], t["yv"])), tracin.self_influence()
    _check_against(arr, scores, selfs)


def test_projected_tracks_exact(trained: dict, tmp_path: Path) -> None:
    """A seeded random projection keeps the self-influence ranking of the exact gradients (JL, dimension 512)."""
    t = trained
    glob = str(t["tmp"] / "epoch*.pt")
    got = {}
    for mode in ("exact", "projected"):
        run_direct(t["model"], DataLoader(TensorDataset(t["x"], t["y"]), 50), DataLoader(TensorDataset(t["xv"], t["yv"]), 40),
                   tmp_path / mode, {"mode": mode, "checkpoints": glob, "projection_dim": 512})
        got[mode] = arrays(tmp_path / mode)["self_influence"]
    r = np.corrcoef(np.argsort(np.argsort(got["exact"])), np.argsort(np.argsort(got["projected"])))[0, 1]
    assert r > 0.95


def _noisy_run(tmp_path: Path, regression: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    pl.seed_everything(3, verbose=False)
    n, flip = 300, 24  # 8% of the training labels
    x, y = blobs(n, 5)
    noisy = torch.randperm(n, generator=torch.Generator().manual_seed(7))[:flip]
    if regression:
        w = torch.randn(8, 1, generator=torch.Generator().manual_seed(11))
        y = x @ w + 0.1 * torch.randn(n, 1, generator=torch.Generator().manual_seed(12))
        y[noisy] += 3 * y.std() * torch.sign(torch.randn(flip, 1, generator=torch.Generator().manual_seed(13)))
        xv = x[:20]
        yv = y[:20]
    else:
        y = y.clone()
        y[noisy] = (y[noisy] + 1 + torch.randint(0, 2, (flip,), generator=torch.Generator().manual_seed(8))) % 3
        xv, yv = blobs(20, 6)
    out = tmp_path / "autopsy"
    model = Net(n_out=1 if regression else 3, lr=0.05 if regression else 0.2, regression=regression)
    trainer(tmp_path, [autopsy_cb(out, {"k": 5}, target="regression" if regression else "classification")],
            epochs=8).fit(model, DataLoader(TensorDataset(x, y), 32, shuffle=True), DataLoader(TensorDataset(xv, yv), 20))
    return noisy.numpy(), arrays(out)["self_influence"], record(out)


@pytest.mark.parametrize("regression", [False, True], ids=["classifier", "regressor"])
def test_planted_label_noise_is_found(tmp_path: Path, regression: bool) -> None:
    noisy, si, rec = _noisy_run(tmp_path, regression)
    assert rec["status"] == "ok", rec["reason"]
    top = np.argsort(-si)[: len(noisy)]
    recall = len(set(top.tolist()) & set(noisy.tolist())) / len(noisy)
    chance = len(noisy) / len(si)
    assert recall / chance >= 3, (recall, chance)
    assert any("candidates for relabelling or removal" in f for f in rec["flags"])


def test_planted_shortcut_shows_up_as_proponents(tmp_path: Path) -> None:
    """30 training samples of class 0 carry only an artefact (feature 7 = 5, other features noise); the test
    samples with the artefact find their proponents among them."""
    pl.seed_everything(4, verbose=False)
    x, y = blobs(300, 21, spread=0.5)
    x[:, 7] = 0.1 * torch.randn(300, generator=torch.Generator().manual_seed(22))
    art = torch.arange(30)
    x[art] = torch.randn(30, 8, generator=torch.Generator().manual_seed(23))
    x[art, 7], y[art] = 5.0, 0
    xv = torch.randn(20, 8, generator=torch.Generator().manual_seed(24))
    xv[:, 7] = 5.0
    yv = torch.zeros(20, dtype=torch.long)
    out = tmp_path / "autopsy"
    trainer(tmp_path, [autopsy_cb(out, {"k": 10})], epochs=6).fit(
        Net(), DataLoader(TensorDataset(x, y), 32, shuffle=True), DataLoader(TensorDataset(xv, yv), 20))
    pro = arrays(out)["proponents"]
    share = np.isin(pro, art.numpy()).mean()
    assert share >= 0.5, share  # chance: 30 / 300 = 0.1


def test_training_unchanged_by_the_callback(tmp_path: Path) -> None:
    """A seeded fit with a shuffling loader ends with bit-identical weights and RNG with and without the callback."""
    x, y = blobs(96, 31)

    def fit(callbacks: list) -> tuple[dict, torch.Tensor]:
        pl.seed_everything(5, verbose=False)
        model = Net()
        trainer(tmp_path, callbacks, epochs=3).fit(model, DataLoader(TensorDataset(x, y), 16, shuffle=True))
        return {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()

    plain, rng = fit([])
    out = tmp_path / "a"
    watched, rng2 = fit([ModelAutopsy(diagnostics=[{"training_influence": {"mode": "exact"}}], checkpoint="live",
                                      target="classification", split="train", output_dir=out)])
    assert record(out)["status"] == "ok" and record(out)["metrics"]["checkpoints"] == 3
    assert all(torch.equal(plain[k], watched[k]) for k in plain)
    assert torch.equal(rng, rng2)


# -- bad input: one clear error naming the option, training_influence failed, the other diagnostics still run ----------
def _two(model: nn.Module) -> list[Snapshot]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return [Snapshot(state, 0.1, "a"), Snapshot({k: v + 0.01 for k, v in state.items()}, 0.1, "b")]


def _data() -> tuple[DataLoader, DataLoader]:
    x, y = blobs(64, 41)
    return DataLoader(TensorDataset(x, y), 16), DataLoader(TensorDataset(x[:16], y[:16]), 16)


def _failed(summary: dict) -> str:
    d = summary["diagnostics"]
    assert d["predictions"]["status"] == "ok"
    assert d["training_influence"]["status"] == "failed"
    assert summary["status"] == "partial"
    return d["training_influence"]["reason"]


def test_no_training_data(tmp_path: Path) -> None:
    train, test = _data()
    model = Net().eval()
    reason = _failed(run_direct(model, train, test, tmp_path, {}, _two(model), give_data=False))
    assert "`training_influence`: no training data reachable" in reason


def test_single_checkpoint(tmp_path: Path) -> None:
    train, test = _data()
    out = tmp_path / "a"
    trainer(tmp_path, [autopsy_cb(out, {})], epochs=1).fit(Net(), train, test)
    reason = json.loads((out / "summary.json").read_text())["diagnostics"]["training_influence"]["reason"]
    assert "`training_influence.snapshots`" in reason and "at least 2 checkpoints" in reason and "but" in reason


def test_loss_not_per_sample(tmp_path: Path) -> None:
    train, test = _data()
    model = Net().eval()
    del model.loss_fn
    model.loss_fn = lambda o, y: F.cross_entropy(o, y) * o.shape[0] ** 0.5  # couples the samples of a batch
    reason = _failed(run_direct(model, train, test, tmp_path, {}, _two(model)))
    assert "`training_influence`: the loss `module.loss_fn` cannot be evaluated per sample" in reason


def test_unknown_final_layer(tmp_path: Path) -> None:
    train, test = _data()
    model = Net().eval()
    reason = _failed(run_direct(model, train, test, tmp_path, {"layer": "haed"}, _two(model)))
    assert "`training_influence.layer` can be one of ['auto', 'net.0', 'head'], got 'haed'. Did you mean 'head'?" in reason
    reason = _failed(run_direct(model, train, test, tmp_path / "b", {"layer": "net.0"}, _two(model)))
    assert "`training_influence.layer`: 'net.0' is not the final layer" in reason
    with pytest.raises(CerebroConfigError, match="training_influence.layer"):  # the callback: before training
        trainer(tmp_path, [autopsy_cb(tmp_path / "c", {"layer": "haed"})], epochs=1).fit(Net(), train, test)


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "fast"}, "`training_influence.mode` can be one of ['last_layer', 'projected', 'exact'], got 'fast'"),
    ({"k": 0}, "`training_influence.k` must be >= 1, got 0"),
    ({"snapshots": 0}, "`training_influence.snapshots` must be >= 1, got 0"),
    ({"checkpoints": 5}, "`training_influence.checkpoints` can be null"),
    ({"checkpoints": str(Path("/nonexistent") / "*.ckpt")}, None),
])
def test_option_validation(tmp_path: Path, options: dict, message: str | None) -> None:
    if message is not None:
        with pytest.raises(CerebroConfigError, match=__import__("re").escape(message)):
            build_config([{"training_influence": options}])
        return
    train, test = _data()  # a glob is checked when the run reads it (files appear during training)
    model = Net().eval()
    reason = _failed(run_direct(model, train, test, tmp_path, options))
    assert "`training_influence.checkpoints`: '/nonexistent/*.ckpt' matches no file" in reason


def test_script_reads_modelcheckpoint_files(tmp_path: Path) -> None:
    """cerebro-autopsy with `training_influence.checkpoints` as a glob of ModelCheckpoint's files (learning rate
    from their optimizer state), the training data from the datamodule; metadata (subject) in the findings."""
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cerebro.cli import run_from_config
    from cerebro.demo import EEGRegressor, SyntheticEEGDataModule
    from cerebro.paths import config_dir

    pl.seed_everything(0, verbose=False)
    dm = SyntheticEEGDataModule(n_train=48, n_val=16, n_test=16, n_chans=8, n_times=128, batch_size=8)
    ckpts = ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="e{epoch}", save_top_k=-1,
                            auto_insert_metric_name=False)
    pl.Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[ckpts]).fit(EEGRegressor(n_chans=8, n_times=128), datamodule=dm)
    data = "{_target_:cerebro.demo.SyntheticEEGDataModule,n_train:48,n_val:16,n_test:16,n_chans:8,n_times:128,batch_size:8}"
    out = tmp_path / "script"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="autopsy_script", overrides=[
            f"checkpoint={tmp_path / 'ckpts' / 'e2.ckpt'}", "model=cerebro.demo.EEGRegressor", f"data={data}",
            f"output_dir={out}", "device=cpu",  # the list form: exactly these two diagnostics
            f"autopsy.diagnostics=[predictions, {{training_influence: {{k: 4, checkpoints: '{tmp_path}/ckpts/e*.ckpt'}}}}]"])
    summary = run_from_config(cfg)
    rec = summary["diagnostics"]["training_influence"]
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    assert (m["checkpoints"], m["n_train"], m["k"]) == (3, 48, 4)
    assert m["learning_rates"] == [pytest.approx(3e-3)] * 3  # Adam's lr, read from each file's optimizer state
    assert arrays(out)["proponents"].shape == (16, 4)
    case = m["worst_cases"][0]
    assert set(case["proponents"][0]["metadata"]) == {"field_2"} and case["proponents"][0]["label"] is not None
    assert rec["flags"][-1].startswith(f"worst sample {case['index']}'s strongest proponents are ")


class Squeezed(nn.Module):
    """A regressor returning ``(B,)`` (its head's ``(B, 1)`` squeezed), without a loss attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x)).squeeze(-1)


@pytest.mark.parametrize("mode", ["last_layer", "projected", "exact"])
def test_squeezed_output_default_loss_all_modes(tmp_path: Path, mode: str) -> None:
    """run_autopsy(train_dataloader=...) with checkpoint files; the target's default (squared error) loss."""
    from cerebro import run_autopsy

    torch.manual_seed(0)
    model, x = Squeezed(), torch.randn(48, 4)
    y = x.sum(1)
    for i in range(3):
        torch.save({"state_dict": {k: v + 0.05 * i for k, v in model.state_dict().items()}}, tmp_path / f"c{i}.pt")
    s = run_autopsy(model, DataLoader(TensorDataset(x[:12], y[:12]), 8), output_dir=tmp_path / "out",
                    diagnostics=[{"training_influence": {"mode": mode, "checkpoints": [str(tmp_path / "c*.pt")], "k": 3}}],
                    train_dataloader=DataLoader(TensorDataset(x, y), 16, shuffle=True))
    rec = s["diagnostics"]["training_influence"]
    assert rec["status"] == "ok", rec["reason"]
    assert rec["metrics"]["loss_source"] == "default_regression" and rec["metrics"]["learning_rates"] == [1.0] * 3
    arr = arrays(tmp_path / "out")
    assert arr["proponents"].shape == (12, 3) and arr["self_influence"].shape == (48,)
    assert (arr["self_influence"] >= 0).all() and (arr["proponent_scores"][:, 0] >= arr["opponent_scores"][:, 0]).all()
