"""Orchestration: :func:`execute` runs a validated autopsy end to end and writes the report; :func:`run_autopsy` is
the public entry point (validate -> collect samples -> copy model -> preflight -> each diagnostic -> report)."""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cerebro import __version__
from cerebro.engine.distributed import SINGLE, Comm
from cerebro.engine.rng import preserved_rng
from cerebro.errors import AutopsyAbort, AutopsyFailure, CerebroConfigError
from cerebro.model_source import CheckpointInfo
from cerebro.report.drift import write_drift
from cerebro.report.findings import findings_of
from cerebro.report.html import write_html
from cerebro.report.loggers import log_summary
from cerebro.report.progress import Progress, progress_for
from cerebro.report.writer import ReportWriter
from cerebro.runner.config import AutopsyConfig, build_config
from cerebro.runner.device import resolve_device
from cerebro.engine.influence_data import training_extras
from cerebro.report.notebook import AutopsySummary
from cerebro.runner.diagnose import _diagnose, _interrupted, _status
from cerebro.runner.prepare import _eeg_views, _prepare
from cerebro.samples import SampleSet
from cerebro.targets import TargetAdapter

__all__ = ["execute", "run_autopsy"]

log = logging.getLogger("cerebro")


def _versions() -> dict[str, str]:
    import captum
    import lightning

    return {"cerebro": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "captum": captum.__version__}


def execute(
    model: nn.Module,
    data: Iterable[Any] | SampleSet,
    config: AutopsyConfig,
    output_dir: str | Path,
    checkpoint: CheckpointInfo | None = None,
    device: torch.device | None = None,
    source: str = "dataloader",
    loggers: Sequence[Any] = (),
    step: int | None = None,
    comm: Comm = SINGLE,
    history: Sequence[tuple[int, str | Path]] = (),
    progress: str | None = None,
    progress_stream: Any = None,
    announce: bool = False,
    extras: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a validated autopsy and write the report; returns the summary dict (also ``summary.json``).

    Under DDP (``comm`` with several ranks) every rank calls this with the same samples; rank 0 writes the report.
    ``history``: ``(epoch, folder)`` of periodic autopsies during training, summarised as ``drift``.
    ``progress``: ``"tqdm"``, ``"rich"`` or ``None`` (silent), see :func:`cerebro.report.progress.progress_for`.
    ``announce``: print one line with the status and the report's path at the end (rank 0 only).
    ``extras``: entries added to the diagnostics' ``ctx.extras`` (the training data of ``training_influence``).
    """
    checkpoint = checkpoint or CheckpointInfo(source="live")
    device = device or resolve_device(None, model)
    scratch = None if comm.is_main else tempfile.mkdtemp(prefix="cerebro-rank")
    try:
        writer = ReportWriter(output_dir if scratch is None else scratch)
    except OSError as err:
        raise CerebroConfigError(f"`output_dir` {str(output_dir)!r} cannot be created: {err.strerror or err}") from err
    t_start, t_mono = time.perf_counter(), time.monotonic()
    summary: dict[str, Any] = {
        "cerebro_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "failed",
        "reason": None,
        "checkpoint": checkpoint.to_dict(),
        "device": str(device),
        "world_size": comm.world,
        "n_samples": 0,
        "samples": {"source": source, "sampling": config.sampling, "max_samples": config.max_samples},
        "target": config.target.describe(),
        "config": config.resolved(),
        "diagnostics": {},
        "versions": _versions(),
    }
    spill = tempfile.mkdtemp(prefix=".samples-", dir=writer.root)
    try:
        # Hooks at the end of trainer.test/validate run under inference_mode: leave it before touching tensors.
        # The user's random states come back untouched (iterating their loader draws from torch's RNG, for one).
        with torch.inference_mode(False), torch.enable_grad(), preserved_rng():
            ctx, error = None, None
            try:
                ctx = _prepare(model, data, config, checkpoint, device, source, spill, summary, comm, extras)
            except (AutopsyAbort, CerebroConfigError) as err:
                error = str(err)
            except Exception as err:  # noqa: BLE001 - the autopsy never breaks the caller unless strict
                error = f"{type(err).__name__}: {err}"
                writer.write_text("autopsy.traceback.txt", traceback.format_exc())
            error = comm.first_error(error)  # every rank stops if any rank cannot go on
            if error is None:
                assert ctx is not None
                writer.eeg = _eeg_views(config.eeg, ctx, summary)
                total = None if config.total_time_budget_s is None else t_mono + config.total_time_budget_s
                try:
                    with Progress(len(config.diagnostics), progress if comm.is_main else None, progress_stream) as bar:
                        _diagnose(ctx, config, writer, summary, bar, total)
                except KeyboardInterrupt:
                    _interrupted(config, writer, summary, comm)
                    raise
                summary["status"], summary["reason"] = _status(summary["diagnostics"])
            else:
                summary["status"], summary["reason"] = "failed", error
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - t_start, 4)
    if comm.is_main and history:
        try:
            summary["drift"] = write_drift(writer, history)
        except Exception as err:  # noqa: BLE001 - a view over earlier runs never costs this report
            summary["drift"] = {"error": f"{type(err).__name__}: {err}"}
    if comm.is_main:
        summary["findings"] = findings_of(summary, writer.root)
        writer.write_summary(summary)
        write_html(writer, summary)
        log_summary(loggers, summary, step, root=writer.root)
        if announce:
            print(f"cerebro: autopsy {summary['status']}"
                  + (f" ({summary['reason']})" if summary.get("reason") else "")
                  + f"; report: {Path(output_dir) / 'report.html'}", flush=True)
    if summary["status"] != "ok":
        msg = f"cerebro autopsy {summary['status']}: {summary['reason']} (report: {Path(output_dir)})"
        if config.fail_on_error:
            raise AutopsyFailure(msg)
        if comm.is_main:
            log.warning(msg)
    return summary


def run_autopsy(
    model: nn.Module,
    dataloader: Iterable[Any],
    diagnostics: Any = None,
    target: str | Mapping[str, Any] | TargetAdapter = "regression",
    output_dir: str | Path = "autopsy",
    max_samples: int = 256,
    batch_size: int | None = None,
    checkpoint: str | None = None,
    device: Any = None,
    seed: int = 0,
    sampling: str = "first",
    fail_on_error: bool = False,
    input_key: int | str | None = None,
    target_key: int | str | None = None,
    memory_budget_mb: float | None = None,
    loggers: Sequence[Any] = (),
    eeg: Any = None,
    progress: bool | None = None,
    progress_stream: Any = None,
    time_budget_s: float | None = None,
    total_time_budget_s: float | None = None,
    resume: bool = True,
    output_key: int | str | None = None,
    weights_only: bool = True,
    tokens: Any = None,
    train_dataloader: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """Run a model autopsy on ``model`` (an ``nn.Module`` or ``LightningModule``) over ``dataloader``.

    Args:
        model: the module to study; it is never modified (the autopsy works on a private copy).
        dataloader: any iterable of batches: tensors, tuples ``(x, y, *extra)`` or dicts.
        diagnostics: names or ``{name: options}`` entries (default: the six core diagnostics).
        target: ``"regression"``, ``"classification"`` or ``{kind: ..., ...}``.
        output_dir: where ``summary.json``, ``report.html``, ``figures/`` and ``arrays/`` go.
        max_samples: how many samples to study.
        batch_size: samples per forward pass (default: the loader's batch size, else 32).
        checkpoint: a checkpoint file whose weights are loaded into the copy; ``None`` studies ``model`` as is.
        device: where to run (default: the model's device).
        seed: seed of ``sampling="random"``.
        sampling: ``"first"`` samples in order, or a seeded ``"random"`` draw over the whole loader.
        fail_on_error: raise :class:`~cerebro.errors.AutopsyFailure` instead of recording failures.
        input_key / target_key: positions (tuples) or keys (dicts) of the input and the label in a batch.
        memory_budget_mb: bytes of activations per pass for batching attribution passes (default: automatic).
        loggers: Lightning loggers that receive the scalar metrics under ``autopsy/``.
        eeg: ``{channel_names, sfreq, montage}`` of ``(C, T)`` inputs: channel names on the bars, time in
            seconds, scalp topomaps (montage needs ``cerebro[eeg]``).
        progress: a bar with one step per diagnostic; ``None`` = only when ``progress_stream`` (default stderr)
            is a terminal.
        time_budget_s / total_time_budget_s: seconds one diagnostic / the whole autopsy may take; a diagnostic
            past its budget stops at its next block and is ``failed`` with the reason, the rest still run (or are
            ``skipped`` once the total is spent).
        output_key: for models returning tuples, dicts or output objects (e.g. Hugging Face ``ModelOutput``):
            the position, key or attribute of the prediction (``"logits"``).
        weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (default); ``False`` unpickles
            anything, which runs code named in the file: only for checkpoints you trust.
        tokens: token-id inputs: ``{embedding: auto | name, baseline: pad | mask | zeros | <id>, per_dimension}``
            (see :class:`~cerebro.adapters.tokens.TokenOptions`).
        resume: skip diagnostics that a previous autopsy in ``output_dir`` finished on the same checkpoint file
            (sha256), samples, target and options.
        train_dataloader: the training data of ``training_influence`` (read once, in dataset order); its
            checkpoints are the files of its ``checkpoints`` option.

    Returns:
        The summary, as written to ``<output_dir>/summary.json``.
    """
    config = build_config(diagnostics, target, max_samples, batch_size, sampling, seed, fail_on_error,
                          input_key, target_key, memory_budget_mb, eeg, time_budget_s, total_time_budget_s, resume, output_key, weights_only,
                          tokens)
    dev = resolve_device(device, model)
    info = CheckpointInfo(source="path", path=str(checkpoint)) if checkpoint not in (None, "live") else None
    extras = None if train_dataloader is None else training_extras(
        train_dataloader, config.batch, "train_dataloader", weights_only=weights_only)
    summary = execute(model, dataloader, config, output_dir, info, dev, loggers=loggers,
                      progress=progress_for(None, progress, progress_stream), progress_stream=progress_stream,
                      announce=True, extras=extras)
    return AutopsySummary(summary, output_dir)  # the summary dict, which also displays itself in notebooks
