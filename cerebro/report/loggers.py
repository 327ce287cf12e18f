"""Send the autopsy to the Trainer's Lightning loggers, each through its own API, under ``autopsy/``.

* every logger: the scalar metrics, ``autopsy/<diagnostic>/<metric>`` plus ``autopsy/<diagnostic>/ok``;
* TensorBoard: also the figures (``autopsy/figures/<stem>``), histograms of the small arrays
  (``autopsy/arrays/<diagnostic>/<key>``) and a status table with the summary as text (``autopsy/summary``);
* MLflow: also the whole output folder as run artifacts under ``autopsy/``;
* Weights & Biases: also the figures and ``autopsy/status`` and ``autopsy/findings`` tables.

The findings (``summary["findings"]``) travel too: their count per severity as scalars, the list as Markdown in
TensorBoard's text and MLflow's ``autopsy/findings.md``, a table in W&B.

A logger that fails, or whose optional package (tensorboard, mlflow, wandb) is missing, is noted and skipped:
logging never breaks the autopsy or the training run.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["scalar_metrics", "log_summary"]

log = logging.getLogger("cerebro")

#: ``backend(logger, summary, scalar_metrics, step, root)``
Backend = Callable[..., None]

#: Arrays never sent as histograms: per-sample attribution maps (large) and sample indices (not informative).
_NO_HISTOGRAM = frozenset({"attributions", "indices"})
_MAX_HISTOGRAM_SIZE = 1_000_000
STATUS_COLUMNS = ("diagnostic", "status", "seconds", "flags", "reason")
FINDING_COLUMNS = ("severity", "kind", "diagnostic", "text")


def scalar_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Finite numeric top-level metrics of every diagnostic (engine internals such as chunk sizes left out), one
    ``ok`` flag per diagnostic, and the number of findings per severity (``autopsy/findings/<severity>``)."""
    from cerebro.report.tables import is_engine_key

    out: dict[str, float] = {}
    for name, rec in summary.get("diagnostics", {}).items():
        out[f"autopsy/{name}/ok"] = float(rec["status"] == "ok")
        for key, value in rec.get("metrics", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and not is_engine_key(key):
                out[f"autopsy/{name}/{key}"] = float(value)
    findings = summary.get("findings")
    if isinstance(findings, list):
        for severity in ("problem", "warning", "info"):
            out[f"autopsy/findings/{severity}"] = float(sum(isinstance(f, dict) and f.get("severity") == severity
                                                            for f in findings))
    return out


def log_summary(loggers: Sequence[Any], summary: dict[str, Any], step: int | None = None,
                root: str | os.PathLike[str] | None = None) -> None:
    """Send ``summary`` (and, given the output folder ``root``, its figures and arrays) to each logger."""
    metrics = scalar_metrics(summary)
    folder = None if root is None else Path(root)
    for logger in loggers or ():
        name = type(logger).__name__
        try:
            _backend(logger)(logger, summary, metrics, step, folder)
        except ImportError as err:
            log.warning("cerebro: autopsy not sent to %s, an optional package is missing (%s); "
                        "install the loggers extra of cerebro-autopsy (tensorboard, mlflow-skinny, wandb)", name, err)
        except Exception as err:  # noqa: BLE001 - a logger problem never breaks the autopsy or training
            log.warning("cerebro: could not log the autopsy to %s: %s", name, err)


# -- per-logger backends ------------------------------------------------------------------------------------------
def _plain(logger: Any, summary: dict[str, Any], metrics: dict[str, float], step: int | None,
           root: Path | None) -> None:
    """CSVLogger and any other logger: the scalars through ``log_metrics``, then ``save``."""
    logger.log_metrics(metrics, step=step)
    logger.save()


def _tensorboard(logger: Any, summary: dict[str, Any], metrics: dict[str, float], step: int | None,
                 root: Path | None) -> None:
    writer = logger.experiment  # a SummaryWriter (torch.utils.tensorboard, or tensorboardX)
    for key, value in metrics.items():
        writer.add_scalar(key, value, global_step=step)
    for _, path in _artifacts(summary, root, ".png"):
        writer.add_image(f"autopsy/figures/{path.stem}", _read_rgb(path), global_step=step, dataformats="HWC")
    for diag, key, values in _small_arrays(summary, root):
        writer.add_histogram(f"autopsy/arrays/{diag}/{key}", values, global_step=step)
    writer.add_text("autopsy/summary", _markdown(summary), global_step=step)
    writer.flush()


def _mlflow(logger: Any, summary: dict[str, Any], metrics: dict[str, float], step: int | None,
            root: Path | None) -> None:
    importlib.import_module("mlflow")
    logger.log_metrics(metrics, step=step)  # MlflowClient.log_batch on the logger's run
    if summary.get("findings"):
        logger.experiment.log_text(logger.run_id, _findings_markdown(summary), "autopsy/findings.md")
    if root is not None:
        logger.experiment.log_artifacts(logger.run_id, str(root), artifact_path="autopsy")


def _wandb(logger: Any, summary: dict[str, Any], metrics: dict[str, float], step: int | None,
           root: Path | None) -> None:
    importlib.import_module("wandb")
    logger.log_metrics(metrics, step=step)
    for diag, path in _artifacts(summary, root, ".png"):  # one key per figure: a W&B gallery wants equal sizes
        logger.log_image(key=f"autopsy/figures/{path.stem}", images=[str(path)], step=step, caption=[diag])
    logger.log_table(key="autopsy/status", columns=list(STATUS_COLUMNS), data=_status_rows(summary), step=step)
    if summary.get("findings"):
        logger.log_table(key="autopsy/findings", columns=list(FINDING_COLUMNS), step=step,
                         data=[[f.get(c) for c in FINDING_COLUMNS] for f in summary["findings"] if isinstance(f, dict)])


#: (class name in lightning.pytorch.loggers, backend), first match wins; anything else gets ``_plain``.
_BACKENDS: tuple[tuple[str, Backend], ...] = (
    ("TensorBoardLogger", _tensorboard),
    ("MLFlowLogger", _mlflow),
    ("WandbLogger", _wandb),
    ("CSVLogger", _plain),
)


def _backend(logger: Any) -> Backend:
    try:
        module = importlib.import_module("lightning.pytorch.loggers")
    except ImportError:  # pragma: no cover - lightning is a core dependency
        return _plain
    for cls_name, backend in _BACKENDS:
        cls = getattr(module, cls_name, None)
        if cls is not None and isinstance(logger, cls):
            return backend
    return _plain


# -- what the backends send ---------------------------------------------------------------------------------------
def _listed(summary: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(diagnostic or "gallery", relative path)`` of every file the summary lists."""
    for diag, rec in summary.get("diagnostics", {}).items():
        for rel in rec.get("artifacts", []):
            yield diag, rel
    for item in summary.get("gallery") or []:  # the report's worst-case figures
        for rel in item.get("figures", []) if isinstance(item, dict) else []:
            yield "gallery", rel


def _artifacts(summary: dict[str, Any], root: Path | None, suffix: str) -> Iterator[tuple[str, Path]]:
    """``(diagnostic, path)`` of the listed files with this suffix that exist under ``root`` (files left there by
    an earlier run into the same folder are not listed, so never sent)."""
    if root is None:
        return
    for diag, rel in _listed(summary):
        path = root / rel
        if path.suffix == suffix and path.is_file():
            yield diag, path


def _small_arrays(summary: dict[str, Any], root: Path | None) -> Iterator[tuple[str, str, Any]]:
    """``(diagnostic, key, finite values)`` of the numeric arrays worth a histogram (at most 1e6 elements)."""
    import numpy as np

    for diag, path in _artifacts(summary, root, ".npy"):
        if path.stem in _NO_HISTOGRAM:
            continue
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # not a plain numeric array
            continue
        if arr.size > _MAX_HISTOGRAM_SIZE or arr.dtype.kind not in "biuf":
            continue
        values = np.asarray(arr, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            yield diag, path.stem, values


def _read_rgb(path: Path) -> Any:
    """A PNG as an ``(H, W, 3)`` float array in [0, 1] (alpha dropped, grey expanded)."""
    import numpy as np
    from matplotlib.image import imread

    img = imread(path)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _status_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """One ``STATUS_COLUMNS`` row per diagnostic."""
    return [[name, rec.get("status"), rec.get("seconds"), "; ".join(rec.get("flags", [])), rec.get("reason") or ""]
            for name, rec in summary.get("diagnostics", {}).items()]


def _findings_markdown(summary: dict[str, Any]) -> str:
    """The findings as a Markdown list, problems first."""
    order = {"problem": 0, "warning": 1, "info": 2}
    items = sorted((f for f in summary.get("findings") or [] if isinstance(f, dict)),
                   key=lambda f: order.get(f.get("severity"), 3))
    return "\n".join(f"- **{f.get('severity')}** {str(f.get('text')).replace(chr(10), ' ')}" for f in items)


def _markdown(summary: dict[str, Any]) -> str:
    """The findings, the status table in Markdown, then the whole summary as a JSON block."""
    import json

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"**cerebro autopsy: {summary.get('status')}** ({summary.get('n_samples', 0)} samples)"
             + (f": {cell(summary['reason'])}" if summary.get("reason") else ""), "",
             "| " + " | ".join(STATUS_COLUMNS) + " |", "|" + " --- |" * len(STATUS_COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in _status_rows(summary)]
    if summary.get("findings"):
        lines[1:1] = ["", "**Findings**", "", _findings_markdown(summary)]
    lines += ["", "```json", json.dumps(summary, indent=2, default=str), "```"]
    return "\n".join(lines)
