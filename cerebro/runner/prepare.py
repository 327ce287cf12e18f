"""Preparation: collect the samples, copy the model, preflight the target and run the shared forward pass.

Everything here happens once per autopsy, before any diagnostic runs; the result is the
:class:`~cerebro.engine.context.AutopsyContext` every diagnostic shares.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cerebro import adapters
from cerebro.adapters.tokens import detect_tokens
from cerebro.engine.budget import default_budget_bytes
from cerebro.engine.context import AutopsyContext, compute_outputs
from cerebro.engine.distributed import Comm
from cerebro.errors import AutopsyAbort, CerebroConfigError
from cerebro.model_source import CheckpointInfo, prepare_model, sha256_file
from cerebro.report.eeg import EEGInfo
from cerebro.runner.config import AutopsyConfig
from cerebro.samples import SampleSet, collect_samples
from cerebro.targets import pick_output

log = logging.getLogger("cerebro")


def _prepare(model: nn.Module, data: Iterable[Any] | SampleSet, config: AutopsyConfig, checkpoint: CheckpointInfo,
             device: torch.device, source: str, spill: str, summary: dict[str, Any], comm: Comm,
             extras: Mapping[str, Any] | None = None) -> AutopsyContext:
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
                          extras={"diagnostics": list(config.diagnostics), **(extras or {})})


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
