"""The autopsy reaches each Lightning logger through that logger's own API, under ``autopsy/``.

Real loggers, real packages (tensorboard, mlflow-skinny, wandb offline) and a real autopsy folder; everything is
read back from what each logger wrote on disk. Mocks only inject faults (a raising logger, a missing package).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.image import imread

from cerebro import ModelAutopsy
from cerebro.report.loggers import STATUS_COLUMNS, log_summary, scalar_metrics
from tests.autopsy_helpers import autopsy
from tests.models import TinyConv1d

STEP = 3
RMSE = "autopsy/predictions/rmse"
DIAGNOSTICS = ["predictions", {"integrated_gradients": {"n_steps": 8}}, "failure_modes"]


# -- fixtures and readers -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One real autopsy of TinyConv1d on 8 samples of (4, 32): ``(summary, output folder)``."""
    root = tmp_path_factory.mktemp("autopsy")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, 32, generator=gen), torch.randn(8, 1, generator=gen)
    torch.manual_seed(0)
    summary = autopsy(TinyConv1d(), (x, y), root, DIAGNOSTICS)
    assert summary["status"] == "ok", summary["reason"]
    return summary, root


def artifacts(summary: dict[str, Any], suffix: str) -> list[str]:
    return [a for rec in summary["diagnostics"].values() for a in rec["artifacts"] if a.endswith(suffix)]


def figures(root: Path) -> list[Path]:
    """Every figure of the (fresh) output folder: the diagnostics' and the report's own (worst-case gallery)."""
    return sorted((root / "figures").glob("*.png"))


def rmse_of(summary: dict[str, Any]) -> float:
    return summary["diagnostics"]["predictions"]["metrics"]["rmse"]


def tensorboard_events(log_dir: str | Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    return acc.Reload()


def csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def csv_value(logger: CSVLogger, key: str) -> tuple[float, int]:
    """``(value, step)`` of the one metrics.csv row holding ``key``."""
    rows = [r for r in csv_rows(logger) if r.get(key)]
    assert len(rows) == 1, rows
    return float(rows[0][key]), int(rows[0]["step"])


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """History rows of an offline W&B run, read from its ``.wandb`` file (LevelDB-log framing: 7-byte file header,
    32 KiB blocks, records of crc32 + length + type + protobuf ``Record`` bytes, split FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payload, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block tail too short for a record header: zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a record still being written
            break
        payload += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(payload)
            payload = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MemoryLogger(Logger):
    """A minimal custom Lightning logger (no special support in cerebro) that keeps what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, float], int | None]] = []
        self.saves = 0

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.received.append((dict(metrics), step))

    def save(self) -> None:
        self.saves += 1


# -- TensorBoard --------------------------------------------------------------------------------------------------
def test_tensorboard_gets_scalars_figures_histograms_and_text(report, tmp_path: Path) -> None:
    summary, root = report
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    log_summary([logger], summary, step=STEP, root=root)
    events = tensorboard_events(logger.log_dir)
    tags = events.Tags()

    # Scalars: every scalar metric at step 3 (TensorBoard stores float32).
    metrics = scalar_metrics(summary)
    assert set(metrics) <= set(tags["scalars"])
    (rmse,) = events.Scalars(RMSE)
    assert rmse.step == STEP and rmse.value == pytest.approx(rmse_of(summary), rel=1e-6)
    assert [e.value for e in events.Scalars("autopsy/integrated_gradients/ok")] == [1.0]

    # Images: one per figure of the output folder, with the PNG's own size.
    pngs = figures(root)
    assert len(pngs) >= 5 and {str(p.relative_to(root)) for p in pngs} >= set(artifacts(summary, ".png"))
    assert sorted(tags["images"]) == sorted(f"autopsy/figures/{p.stem}" for p in pngs)
    for png in pngs:
        (img,) = events.Images(f"autopsy/figures/{png.stem}")
        h, w = imread(png).shape[:2]
        assert (img.step, img.height, img.width) == (STEP, h, w)

    # Histograms: the small arrays (predictions, per-sample errors, channel importance...), never the
    # per-sample attribution maps nor the sample indices.
    expected = {f"autopsy/arrays/{Path(a).parent.name}/{Path(a).stem}" for a in artifacts(summary, ".npy")
                if Path(a).stem not in ("attributions", "indices")}
    assert {"autopsy/arrays/predictions/predictions", "autopsy/arrays/failure_modes/errors",
            "autopsy/arrays/integrated_gradients/channel_importance"} <= expected
    assert set(tags["histograms"]) == expected
    (hist,) = events.Histograms("autopsy/arrays/predictions/predictions")
    preds = np.load(root / "arrays/predictions/predictions.npy")
    assert hist.step == STEP and hist.histogram_value.num == preds.size
    value = hist.histogram_value
    assert (value.min, value.max) == (pytest.approx(preds.min()), pytest.approx(preds.max()))

    # Text: the status table and the summary JSON.
    (text_tag,) = [t for t in tags["tensors"] if t.startswith("autopsy/summary")]
    text = events.Tensors(text_tag)[0].tensor_proto.string_val[0].decode()
    assert "| predictions | ok |" in text and "| failure_modes | ok |" in text
    assert summary["findings"] and "**Findings**" in text and summary["findings"][0]["text"] in text
    assert metrics["autopsy/findings/info"] == sum(f["severity"] == "info" for f in summary["findings"])
    assert json.loads(text.split("```json\n", 1)[1].rsplit("\n```", 1)[0])["diagnostics"].keys() == \
        summary["diagnostics"].keys()


def test_tensorboard_without_output_folder_gets_scalars_and_text_only(report, tmp_path: Path) -> None:
    summary, _ = report
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    log_summary([logger], summary, step=STEP)  # root=None: nothing to read from disk
    tags = tensorboard_events(logger.log_dir).Tags()
    assert set(scalar_metrics(summary)) == set(tags["scalars"])
    assert tags["images"] == [] and tags["histograms"] == []
    assert [t for t in tags["tensors"] if t.startswith("autopsy/summary")]


# -- MLflow -------------------------------------------------------------------------------------------------------
@pytest.fixture
def mlflow_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MLFlowLogger:
    pytest.importorskip("mlflow", reason="mlflow-skinny is not installed (the loggers extra)")
    uri = f"file:{tmp_path}/mlruns"
    # MLflow >= 3.x refuses the file store ("maintenance mode") unless told; SQLite needs the full mlflow package.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test (the logger sets it globally)
    return MLFlowLogger(experiment_name="cerebro-test", tracking_uri=uri)


def test_mlflow_gets_metrics_and_the_output_folder(report, mlflow_logger: MLFlowLogger, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    summary, root = report
    log_summary([mlflow_logger], summary, step=STEP, root=root)
    client = MlflowClient(mlflow_logger._tracking_uri)
    run_id = mlflow_logger.run_id

    (rmse,) = client.get_metric_history(run_id, RMSE)  # the same float64 value stored and read back: 1e-12 holds
    assert (rmse.step, rmse.value) == (STEP, pytest.approx(rmse_of(summary), rel=1e-12))
    assert set(client.get_run(run_id).data.metrics) == set(scalar_metrics(summary))

    listed = {a.path for a in client.list_artifacts(run_id, "autopsy")}
    assert {"autopsy/summary.json", "autopsy/report.html", "autopsy/figures", "autopsy/arrays"} <= listed
    uploaded = {Path(a.path).name for a in client.list_artifacts(run_id, "autopsy/figures")}
    assert uploaded == {p.name for p in figures(root)}
    copy = client.download_artifacts(run_id, "autopsy/summary.json", str(tmp_path / "download"))
    assert json.loads(Path(copy).read_text()) == json.loads((root / "summary.json").read_text())


# -- CSV and any other logger -------------------------------------------------------------------------------------
def test_csv_logger_gets_the_scalars(report, tmp_path: Path) -> None:
    summary, root = report
    logger = CSVLogger(tmp_path, name="csv", version=0)
    log_summary([logger], summary, step=STEP, root=root)
    value, step = csv_value(logger, RMSE)  # the same float64 value written as text and parsed back
    assert step == STEP and value == pytest.approx(rmse_of(summary), rel=1e-12)
    assert set(scalar_metrics(summary)) <= set(csv_rows(logger)[0])


def test_other_logger_gets_log_metrics_and_save(report) -> None:
    summary, root = report
    logger = MemoryLogger()
    log_summary([logger], summary, step=STEP, root=root)
    assert logger.received == [(scalar_metrics(summary), STEP)]
    assert logger.saves == 1


# -- Weights & Biases (offline) -----------------------------------------------------------------------------------
def test_wandb_offline_gets_scalars_figures_and_status_table(report, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (the loggers extra)")
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                       "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(var, value)
    summary, root = report
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="cerebro-test")
    try:
        log_summary([logger], summary, step=STEP, root=root)
    finally:
        run_dir = Path(logger.experiment.dir).parent
        logger.experiment.finish()

    # The scalars are in the run's history, with Lightning's step. `finish()` can return before the W&B service
    # has written the run's history to disk: wait for it.
    deadline = time.monotonic() + 60
    while not (rows := [r for r in wandb_history(run_dir) if RMSE in r]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rows) == 1
    assert rows[0][RMSE] == pytest.approx(rmse_of(summary), rel=1e-12) and rows[0]["trainer/global_step"] == STEP

    # Every figure was copied, byte for byte, into the run's media folder.
    media = run_dir / "files" / "media" / "images" / "autopsy" / "figures"
    assert sorted(sha(p) for p in media.glob("*.png")) == sorted(sha(p) for p in figures(root))

    # The status table: one row per diagnostic.
    (table,) = (run_dir / "files" / "media" / "table" / "autopsy").glob("status*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == list(STATUS_COLUMNS)
    assert [(r[0], r[1]) for r in content["data"]] == [(n, rec["status"]) for n, rec in summary["diagnostics"].items()]
    flags = dict((r[0], r[3]) for r in content["data"])
    assert flags["predictions"] == "; ".join(summary["diagnostics"]["predictions"]["flags"])


# -- faults -------------------------------------------------------------------------------------------------------
class FlakyCSVLogger(CSVLogger):
    """A CSVLogger; the test makes its ``log_metrics`` raise."""


def test_failing_logger_is_a_warning_and_the_others_still_get_data(report, tmp_path: Path, caplog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    summary, root = report

    def disk_full(self: Any, metrics: Any, step: Any = None) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FlakyCSVLogger, "log_metrics", disk_full)
    flaky = FlakyCSVLogger(tmp_path, name="flaky", version=0)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    good = CSVLogger(tmp_path, name="csv", version=0)
    with caplog.at_level(logging.WARNING, logger="cerebro"):
        log_summary([flaky, tb, good], summary, step=STEP, root=root)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "FlakyCSVLogger" in warnings[0].getMessage() and "disk full" in warnings[0].getMessage()
    assert csv_value(good, RMSE) == (pytest.approx(rmse_of(summary), rel=1e-12), STEP)
    (rmse,) = tensorboard_events(tb.log_dir).Scalars(RMSE)
    assert rmse.value == pytest.approx(rmse_of(summary), rel=1e-6)


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_missing_optional_package_is_one_note(package: str, report, tmp_path: Path, caplog,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(package, reason=f"{package} is needed to build its Lightning logger")
    summary, root = report
    if package == "mlflow":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        logger: Logger = MLFlowLogger(tracking_uri=f"file:{tmp_path}/mlruns")
    else:
        monkeypatch.setenv("WANDB_MODE", "offline")
        logger = WandbLogger(offline=True, save_dir=str(tmp_path))  # its run starts lazily: never, here
    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` now raises ImportError
    good = CSVLogger(tmp_path, name="csv", version=0)
    with caplog.at_level(logging.INFO, logger="cerebro"):
        log_summary([logger, good], summary, step=STEP, root=root)

    notes = [r.getMessage() for r in caplog.records if r.name == "cerebro"]
    assert len(notes) == 1
    assert type(logger).__name__ in notes[0] and package in notes[0] and "loggers extra of cerebro-autopsy" in notes[0]
    assert csv_value(good, RMSE)[0] == pytest.approx(rmse_of(summary), rel=1e-12)
    assert not list(tmp_path.glob("mlruns/*/*/meta.yaml")) and not (tmp_path / "wandb").exists()  # no run started


# -- end to end: the callback inside a real Trainer ---------------------------------------------------------------
def test_trainer_loggers_receive_the_autopsy(eeg_dm, make_trainer, tmp_path: Path) -> None:
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    callback = ModelAutopsy(diagnostics=["predictions", {"integrated_gradients": {"n_steps": 8}}], max_samples=8)
    trainer = make_trainer([callback], max_epochs=1, logger=[tb, csv_logger])
    from cerebro.demo import EEGRegressor

    torch.manual_seed(0)
    trainer.fit(EEGRegressor(n_chans=8, n_times=128), datamodule=eeg_dm)
    summary = callback.last_summary
    assert summary["status"] == "ok", summary["reason"]
    out = Path(tb.log_dir) / "autopsy"  # default output folder: <trainer.log_dir>/autopsy
    assert (out / "summary.json").is_file()

    # Scalars, at the Trainer's global step, in both loggers.
    events = tensorboard_events(tb.log_dir)
    (rmse,) = events.Scalars(RMSE)
    assert rmse.step == trainer.global_step == 4
    assert rmse.value == pytest.approx(rmse_of(summary), rel=1e-6)
    assert csv_value(csv_logger, RMSE) == (pytest.approx(rmse_of(summary), rel=1e-12), trainer.global_step)

    # Figures and histograms: these need cerebro/runner.py to pass the output folder,
    # `log_summary(loggers, summary, step, root=writer.root)`.
    pngs = figures(out)
    assert pngs and sorted(events.Tags()["images"]) == sorted(f"autopsy/figures/{p.stem}" for p in pngs)
    assert "autopsy/arrays/predictions/predictions" in events.Tags()["histograms"]
