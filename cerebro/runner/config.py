"""Autopsy settings: :class:`AutopsyConfig` and :func:`build_config`, which validates every option before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cerebro.adapters.tokens import TokenOptions, build_token_options
from cerebro.config import parse_diagnostics
from cerebro.diagnostics.base import Diagnostic
from cerebro.errors import CerebroConfigError, choice_error
from cerebro.report.eeg import EEGInfo, build_eeg_info
from cerebro.samples import BatchSpec
from cerebro.targets import TargetAdapter, build_target

__all__ = ["AutopsyConfig", "build_config", "check_positive_int", "SAMPLINGS"]

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
