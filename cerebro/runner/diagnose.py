"""The diagnose loop: run each diagnostic in isolation, resume finished ones, honour the time budgets, set the status."""

from __future__ import annotations

import json
import logging
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.context import AutopsyContext
from cerebro.engine.distributed import Comm
from cerebro.errors import DiagnosticSkipped
from cerebro.report.gallery import write_gallery
from cerebro.report.html import write_html
from cerebro.report.progress import Progress
from cerebro.report.writer import ReportWriter, jsonable
from cerebro.runner.config import AutopsyConfig
from cerebro.runner.device import device_error_reason

log = logging.getLogger("cerebro")


def _run_one(diag: Diagnostic, ctx: AutopsyContext, writer: ReportWriter) -> dict[str, Any]:
    out = writer.output(diag.name)
    t0 = time.perf_counter()
    status, reason = "ok", None
    if diag.requires_labels and not ctx.has_labels:
        status, reason = "skipped", f"{diag.name} needs labels, but the batches carry none"
    else:
        try:
            if isinstance(ctx.observed.get(diag.name), BaseException):
                raise ctx.observed.pop(diag.name)  # its hook failed during the shared forward pass
            diag.run(ctx, out)
        except KeyboardInterrupt:
            writer.discard(out.artifacts)  # half-written files never read as results
            raise
        except DiagnosticSkipped as why:
            status, reason = "skipped", str(why)
            writer.discard(out.artifacts)
            out.artifacts = []
        except Exception as err:  # noqa: BLE001 - isolate every diagnostic; the reason is recorded
            status, reason = "failed", device_error_reason(err, ctx.device) or f"{type(err).__name__}: {err}"
            writer.discard(out.artifacts)  # partial files of a failed diagnostic would read as results
            out.artifacts = [writer.write_text(f"{diag.name}.traceback.txt", traceback.format_exc()).name]
            if isinstance(err, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
        finally:
            ctx.model.eval()
            ctx.model.zero_grad(set_to_none=True)
    if status != "ok":
        warnings.warn(f"cerebro: diagnostic {diag.name!r} {status}: {reason}", stacklevel=2)
    return {"status": status, "reason": reason, "seconds": round(time.perf_counter() - t0, 4),
            "metrics": out.metrics, "flags": out.flags, "artifacts": out.artifacts}


def _status(records: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
    failed = [n for n, r in records.items() if r["status"] == "failed"]
    if not failed:
        return "ok", None
    if all(r["status"] == "failed" for r in records.values()):
        return "failed", f"every diagnostic failed: {failed}"
    return "partial", f"failed diagnostics: {failed}"


def _interrupted(config: AutopsyConfig, writer: ReportWriter, summary: dict[str, Any], comm: Comm) -> None:
    """Ctrl-C during the diagnostics: what finished is kept, and a valid ``partial`` summary and report say so."""
    records = summary["diagnostics"]
    running = next((d.name for d in config.diagnostics if d.name not in records), None)
    for diag in config.diagnostics:
        records.setdefault(diag.name, _not_run("not run: the autopsy was interrupted (KeyboardInterrupt)"))
    summary["status"] = "partial"
    summary["reason"] = f"interrupted (KeyboardInterrupt) while running {running!r}; finished diagnostics are kept"
    if comm.is_main:
        writer.write_summary(summary)
        write_html(writer, summary)


def _not_run(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "seconds": 0.0, "metrics": {}, "flags": [], "artifacts": [], "reason": reason}


def _finished_before(root: Path, summary: dict[str, Any], config: AutopsyConfig) -> dict[str, dict[str, Any]]:
    """Records of diagnostics a previous autopsy in ``root`` finished on the same checkpoint file (sha256), samples,
    target and options, whose files are all there: re-running skips them (``resumed: true``)."""
    try:
        previous = json.loads((root / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    same = ("checkpoint", "n_samples", "samples", "target", "tokens")
    sha = (summary.get("checkpoint") or {}).get("sha256")
    if not config.resume or sha is None or not isinstance(previous, dict) or any(
            jsonable(previous.get(k)) != jsonable(summary.get(k)) for k in same):
        return {}
    options = {next(iter(c)): c for c in previous.get("config") or [] if isinstance(c, dict) and len(c) == 1}
    done = {}
    for diag in config.diagnostics:
        rec = (previous.get("diagnostics") or {}).get(diag.name)
        if (rec and rec.get("status") == "ok" and jsonable(options.get(diag.name)) == jsonable(diag.config())
                and all((root / a).is_file() for a in rec.get("artifacts", []))):
            done[diag.name] = {**rec, "resumed": True}
    return done


def _diagnose(ctx: AutopsyContext, config: AutopsyConfig, writer: ReportWriter, summary: dict[str, Any],
              bar: Progress, total_deadline: float | None = None) -> None:
    """Each diagnostic in isolation. Under DDP, attribution diagnostics run on every rank (each on its share of the
    samples) and the others on rank 0 only; every rank takes the same decisions, so none waits for another."""
    records: dict[str, dict[str, Any]] = summary["diagnostics"]
    ctx.extras["records"] = records  # what ran before (e.g. faithfulness reads the sanity checks' verdicts)
    ctx.extras["progress"] = bar  # long diagnostics (training_influence) say how far they are
    comm = ctx.comm
    stopped_by = None
    finished = comm.all_gather(_finished_before(writer.root, summary, config) if comm.is_main else None)[0]
    for diag in config.diagnostics:
        if stopped_by is None and total_deadline is not None and any(comm.all_gather(time.monotonic() >= total_deadline)):
            stopped_by = f"the autopsy's total time budget of {config.total_time_budget_s:g} s is spent"
        if stopped_by is not None:
            records[diag.name] = _not_run(f"not run: {stopped_by}")
            continue
        if diag.name in finished:
            records[diag.name] = finished[diag.name]
            bar.done(diag.name, "resumed")
            continue
        ctx.deadline, ctx.deadline_reason = total_deadline, (
            f"{diag.name} stopped: the autopsy's total time budget of {config.total_time_budget_s or 0:g} s is spent")
        if config.time_budget_s is not None and (ctx.deadline is None
                                                 or time.monotonic() + config.time_budget_s < ctx.deadline):
            ctx.deadline = time.monotonic() + config.time_budget_s
            ctx.deadline_reason = f"{diag.name} ran past its time budget of {config.time_budget_s:g} s (time_budget_s)"
        bar.running(diag.name)
        if comm.is_main or getattr(diag, "shardable", False):
            records[diag.name] = _run_one(diag, ctx, writer)
        if comm.is_main:
            bar.done(diag.name, records[diag.name]["status"])
            summary["status"], summary["reason"] = "partial", "autopsy in progress"
            writer.write_summary(summary)
        failed = comm.is_main and config.fail_on_error and records[diag.name]["status"] == "failed"
        if any(comm.all_gather(failed)):
            stopped_by = f"strict mode stopped after {diag.name!r} failed"
    ctx.deadline = None
    if comm.is_main:
        try:
            write_gallery(ctx, writer, summary)
        except Exception as err:  # noqa: BLE001 - the gallery is a view; its failure never costs the report
            log.warning("cerebro: could not draw the worst-case gallery: %s: %s", type(err).__name__, err)
