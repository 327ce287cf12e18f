"""The autopsy engine: validate -> collect samples -> copy model -> preflight -> run each diagnostic -> write report.

Both the :class:`~cerebro.ModelAutopsy` callback and the ``cerebro-autopsy`` script call :func:`run_autopsy` /
:func:`execute`, so they produce the same outputs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cerebro import __version__
from cerebro import adapters
from cerebro.adapters.tokens import TokenOptions, build_token_options, detect_tokens
from cerebro.config import parse_diagnostics
from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.budget import default_budget_bytes
from cerebro.engine.context import AutopsyContext, compute_outputs
from cerebro.engine.distributed import SINGLE, Comm
from cerebro.engine.influence_data import training_extras  # issue 22
from cerebro.engine.rng import preserved_rng
from cerebro.errors import AutopsyAbort, AutopsyFailure, CerebroConfigError, DiagnosticSkipped, choice_error
from cerebro.model_source import CheckpointInfo, prepare_model, sha256_file
from cerebro.report.drift import write_drift
from cerebro.report.eeg import EEGInfo, build_eeg_info
from cerebro.report.findings import findings_of
from cerebro.report.gallery import write_gallery
from cerebro.report.html import write_html
from cerebro.report.progress import Progress, progress_for
from cerebro.report.loggers import log_summary
from cerebro.report.writer import ReportWriter, jsonable
from cerebro.samples import BatchSpec, SampleSet, collect_samples
from cerebro.targets import TargetAdapter, build_target, pick_output

__all__ = ["AutopsyConfig", "build_config", "run_autopsy", "execute", "resolve_device"]

log = logging.getLogger("cerebro")
SAMPLINGS = ("first", "random")


@dataclass
class AutopsyConfig:
    """Validated settings of one autopsy (everything except the model and the data)."""

    diagnostics: list[Diagnostic]
    target: TargetAdapter
    max_samples: int = 256
    batch_size: int | None = None
    sampling: str = "first"
    seed: int = 0
    fail_on_error: bool = False
    batch: BatchSpec = field(default_factory=BatchSpec)
    memory_budget_mb: float | None = None
    eeg: EEGInfo | None = None
    time_budget_s: float | None = None
    total_time_budget_s: float | None = None
    resume: bool = True
    output_key: int | str | None = None
    weights_only: bool = True
    tokens: TokenOptions = field(default_factory=TokenOptions)

    def resolved(self) -> list[dict[str, Any]]:
        return [d.config() for d in self.diagnostics]


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """A config error unless ``value`` is an int >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CerebroConfigError(f"`{name}` must be a positive int{' or None' if allow_none else ''}, got {value!r}")


def _check_positive_number(name: str, value: Any, unit: str = "") -> None:
    """A config error unless ``value`` is ``None`` or a number > 0 (``unit`` goes into the message)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise CerebroConfigError(f"`{name}` must be a positive number{unit} or None, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise CerebroConfigError(f"`{name}` must be a bool, got {value!r}")


def build_config(
    diagnostics: Any = None,
    target: str | Mapping[str, Any] | TargetAdapter = "regression",
    max_samples: int = 256,
    batch_size: int | None = None,
    sampling: str = "first",
    seed: int = 0,
    fail_on_error: bool = False,
    input_key: int | str | None = None,
    target_key: int | str | None = None,
    memory_budget_mb: float | None = None,
    eeg: Any = None,
    time_budget_s: float | None = None,
    total_time_budget_s: float | None = None,
    resume: bool = True,
    output_key: int | str | None = None,
    weights_only: bool = True,
    tokens: Any = None,
) -> AutopsyConfig:
    """Validate every option; raises :class:`CerebroConfigError` naming the bad value and the valid choices."""
    check_positive_int("max_samples", max_samples)
    check_positive_int("batch_size", batch_size, allow_none=True)
    if sampling not in SAMPLINGS:
        raise choice_error("sampling", sampling, SAMPLINGS)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CerebroConfigError(f"`seed` must be an int, got {seed!r}")
    _check_positive_number("memory_budget_mb", memory_budget_mb)
    _check_positive_number("time_budget_s", time_budget_s, " of seconds")
    _check_positive_number("total_time_budget_s", total_time_budget_s, " of seconds")
    if output_key is not None and (isinstance(output_key, bool) or not isinstance(output_key, (int, str))):
        raise CerebroConfigError(f"`output_key` must be a tuple position, a key or an attribute name, got {output_key!r}")
    for name, flag in (("fail_on_error", fail_on_error), ("weights_only", weights_only), ("resume", resume)):
        _check_bool(name, flag)
    adapter = build_target(target)
    return AutopsyConfig(
        diagnostics=parse_diagnostics(diagnostics),
        target=adapter,
        max_samples=max_samples,
        batch_size=batch_size,
        sampling=sampling,
        seed=seed,
        fail_on_error=fail_on_error,
        batch=BatchSpec(input_key, target_key, keep=adapter.batch_inputs()),
        memory_budget_mb=memory_budget_mb,
        eeg=build_eeg_info(eeg),
        time_budget_s=time_budget_s,
        total_time_budget_s=total_time_budget_s,
        resume=resume,
        output_key=output_key,
        weights_only=weights_only,
        tokens=build_token_options(tokens),
    )


def resolve_device(device: Any, model: nn.Module | None = None) -> torch.device:
    """``None``: the model's device (CPU for a parameterless model); else a valid ``torch.device``."""
    if device is None:
        p = next(iter(model.parameters()), None) if model is not None else None
        return p.device if p is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CerebroConfigError(f"`device` must be None or a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CerebroConfigError(f"`device` is {device!r} but CUDA is not available on this machine")
    return dev


def _versions() -> dict[str, str]:
    import captum
    import lightning

    return {"cerebro": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "captum": captum.__version__}


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
            status, reason = "failed", f"{type(err).__name__}: {err}"
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


def _prepare(model: nn.Module, data: Iterable[Any] | SampleSet, config: AutopsyConfig, checkpoint: CheckpointInfo,
             device: torch.device, source: str, spill: str, summary: dict[str, Any], comm: Comm,
             extras: Mapping[str, Any] | None = None) -> AutopsyContext:  # extras: training_influence (issue 22)
    """Samples, the model copy, the target preflight and the shared forward pass: everything diagnostics share."""
    samples = data if isinstance(data, SampleSet) else collect_samples(
        data, config.max_samples, config.batch, config.sampling, config.seed, source, spill_dir=spill)
    summary["samples"].update(available=samples.available, has_labels=samples.y is not None,
                              metadata_fields=sorted(samples.metadata))
    if samples.n == 0:
        raise AutopsyAbort(
            f"the {source} holds 0 samples (it yielded {samples.available or 0} samples), so there is nothing "
            "to attribute: Captum would fail with 'index 0 is out of bounds for dimension 0 with size 0'. "
            "Check that split's dataset, or pass a non-empty dataloader"
        )
    summary["n_samples"] = samples.n
    summary["samples"]["input_shape"] = list(samples.input_shape)
    if checkpoint.path is not None:
        checkpoint.sha256 = sha256_file(checkpoint.path) if Path(checkpoint.path).is_file() else None
        summary["checkpoint"] = checkpoint.to_dict()
    work = prepare_model(model, checkpoint.path, device, weights_only=config.weights_only)
    if config.output_key is not None:  # on the private copy: every pass sees output[key]
        work.register_forward_hook(lambda _m, _i, out: pick_output(out, config.output_key))
    batch_size = config.batch_size or getattr(data, "batch_size", None) or 32
    probe = samples.x[: min(2, samples.n)].to(device)
    with torch.no_grad():
        first = work(probe)
    key = adapters.output_key(work, first) if config.output_key is None else None
    if key is not None:  # e.g. a Hugging Face ModelOutput: its logits, without output_key
        work.register_forward_hook(lambda _m, _i, out: pick_output(out, key))
        summary["target"]["output_key"] = f"{key} (read from the {type(first).__name__}; output_key overrides it)"
        first = pick_output(first, key)
    config.target.preflight(first, None if samples.y is None else samples.y[: probe.shape[0]])
    tokens = detect_tokens(work, probe, config.tokens)  # integer inputs: token ids and their embedding layer
    summary["samples"]["input_kind"] = "float" if tokens is None else "token_ids" if tokens.error is None else "integer"
    summary["samples"]["input_dtype"] = str(samples.x.dtype).replace("torch.", "")
    if tokens is not None:
        summary["tokens"] = tokens.describe()
    observers, failed_hooks = [], {}
    for diag in config.diagnostics:
        try:
            hooks = diag.observe_forward(work)
        except Exception as err:  # noqa: BLE001 - recorded as that diagnostic's failure
            hooks, failed_hooks[diag.name] = None, err
        if hooks is not None:
            observers.append((diag.name, hooks))
    outputs, observed = compute_outputs(work, samples.x, batch_size, device, observers)
    observed.update(failed_hooks)
    config.target.preflight(outputs, samples.y)  # every label, not only the probe's
    bad_inputs = [int(samples.indices[i]) for i in _nonfinite_rows(samples.x, samples.n, batch_size)]
    if bad_inputs:
        summary.setdefault("warnings", []).append(
            f"inputs of {len(bad_inputs)} samples contain non-finite values (indices {bad_inputs[:10]}"
            f"{' ...' if len(bad_inputs) > 10 else ''}): their outputs and maps are not meaningful")
    if not torch.isfinite(outputs).all():
        rows = (~torch.isfinite(outputs.reshape(len(outputs), -1))).any(1).nonzero()[:, 0].tolist()
        summary.setdefault("warnings", []).append(
            f"model outputs contain {int((~torch.isfinite(outputs)).sum())} non-finite values (samples "
            f"{[int(samples.indices[i]) for i in rows[:10]]}{' ...' if len(rows) > 10 else ''})")
    for warning in summary.get("warnings", []):
        log.warning("cerebro: %s", warning)
    index = config.target.per_sample_arg(outputs, samples,
                                         lambda t: compute_outputs(work, t, batch_size, device)[0])
    budget = int(config.memory_budget_mb * 2**20) if config.memory_budget_mb else default_budget_bytes(device)
    return AutopsyContext(model=work, target=config.target, samples=samples, device=device, batch_size=batch_size,
                          outputs=outputs, index=None if index is None else index.cpu(), seed=config.seed,
                          memory_budget=budget, observed=observed, comm=comm, tokens=tokens,
                          extras={"diagnostics": list(config.diagnostics), **(extras or {})})  # issue 22: extras


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


def _nonfinite_rows(x: Any, n: int, batch_size: int) -> list[int]:
    """Positions of samples whose input holds NaN or inf (read in chunks: inputs may be spilled to disk)."""
    rows: list[int] = []
    for start in range(0, n, batch_size):
        chunk = x[start : start + batch_size]
        bad = ~torch.isfinite(chunk.reshape(chunk.shape[0], -1).float()).all(1)
        rows += (bad.nonzero()[:, 0] + start).tolist()
    return rows


def _eeg_views(info: EEGInfo | None, ctx: AutopsyContext, summary: dict[str, Any]) -> EEGInfo | None:
    """The EEG description when it fits the samples; a mismatch is reported, and the plain views are drawn."""
    if info is None:
        return None
    shape = tuple(ctx.samples.input_shape)
    if len(shape) == 1 and info.channel_names is None and info.montage is None:  # (T,) signals: the sampling rate
        summary["eeg"] = {"channel_names": None, "sfreq": info.sfreq, "montage": None}
        return info
    try:
        if len(shape) != 2:
            raise CerebroConfigError(f"eeg: channel names and montage need (channels, time) inputs, got {shape}")
        info.check(shape[0], "eeg")
    except CerebroConfigError as err:
        summary["eeg"] = {"error": str(err)}
        log.warning("cerebro: EEG views off: %s", err)
        return None
    summary["eeg"] = {"channel_names": info.channel_names, "sfreq": info.sfreq, "montage": info.montage}
    return info


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
    ctx.extras["progress"] = bar  # issue 22: long diagnostics (training_influence) say how far they are
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
    extras: Mapping[str, Any] | None = None,  # issue 22: e.g. {"training_influence": TrainingData}
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
                ctx = _prepare(model, data, config, checkpoint, device, source, spill, summary, comm, extras)  # issue 22
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
    train_dataloader: Iterable[Any] | None = None,  # issue 22: training_influence's training data
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
    extras = None if train_dataloader is None else training_extras(  # issue 22
        train_dataloader, config.batch, "train_dataloader", weights_only=weights_only)
    return execute(model, dataloader, config, output_dir, info, dev, loggers=loggers,
                   progress=progress_for(None, progress, progress_stream), progress_stream=progress_stream,
                   announce=True, extras=extras)
