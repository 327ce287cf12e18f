"""The :class:`Diagnostic` base class and option validation.

A diagnostic declares its options as a dataclass (``Options``); each field may carry ``metadata`` with
``choices`` and a ``min``. Options are validated when the diagnostic is built, i.e. when the callback is
constructed, so a typo fails before training starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from cerebro.errors import CerebroConfigError, choice_error, suggest
from cerebro.plain import to_plain

if TYPE_CHECKING:
    from cerebro.engine.context import AutopsyContext
    from cerebro.report.writer import DiagnosticOutput

__all__ = ["Diagnostic", "NoOptions", "validate_options"]


@dataclasses.dataclass
class NoOptions:
    """A diagnostic without options."""


def _merges(schema: type, key: Any, value: Any) -> bool:
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), {key: value}))
    except Exception:  # noqa: BLE001 - only used to name the option that failed
        return False
    return True


def validate_options(name: str, schema: type, options: Mapping[str, Any] | None) -> Any:
    """Merge ``options`` into the ``schema`` dataclass, raising :class:`CerebroConfigError` on any mistake."""
    if options is None:
        options = {}
    options = to_plain(options, f"options of diagnostic {name!r}")
    if not isinstance(options, Mapping):
        raise CerebroConfigError(f"options of diagnostic {name!r} must be a mapping, got {type(options).__name__}: {options!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in options:
        if key not in fields:
            if not fields:
                raise CerebroConfigError(f"diagnostic {name!r} takes no options, got {key!r}")
            raise choice_error(f"{name} option", key, fields)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(options))
        value = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
        msg = getattr(err, "msg", None) or str(err).splitlines()[0]
        raise CerebroConfigError(f"{name}.{key}: {msg}") from None
    except (OverflowError, TypeError, ValueError) as err:  # escapes OmegaConf's converters, e.g. float(10**400)
        key = next((k for k in options if not _merges(schema, k, options[k])), "?")
        raise CerebroConfigError(f"{name}.{key}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    for f in fields.values():
        v = getattr(value, f.name)
        if isinstance(v, float) and math.isnan(v):
            raise CerebroConfigError(f"`{name}.{f.name}` must be a number, got nan")
        choices = f.metadata.get("choices")
        if choices is not None and v not in choices:
            if not (f.metadata.get("path_ok") and isinstance(v, str)):
                raise choice_error(f"{name}.{f.name}", v, choices)
            if not os.path.isfile(v):  # a name that is not a choice must be a file, checked before any training
                raise CerebroConfigError(
                    f"`{name}.{f.name}` can be one of {list(choices)} or the path of an existing .npy/.pt file, got "
                    f"{v!r}, which is not a file (relative paths start in {os.getcwd()}).{suggest(v, [c for c in choices if isinstance(c, str)])}")
        low = f.metadata.get("min")
        if low is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and v < low:
            raise CerebroConfigError(f"`{name}.{f.name}` must be >= {low}, got {v!r}")
    return value


class Diagnostic:
    """Base class of every diagnostic. Subclass, set ``Options``, implement :meth:`run`, and register it.

    Example:
        >>> @register_diagnostic("output_range")
        ... class OutputRange(Diagnostic):
        ...     def run(self, ctx, out):
        ...         out.metric("max", float(ctx.outputs.max()))
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: Needs labels in the batches; without them the diagnostic is ``skipped`` with the reason.
    requires_labels: ClassVar[bool] = False
    #: Runs after every attribution diagnostic of the run (it reads their saved maps), wherever it is listed.
    after_attributions: ClassVar[bool] = False
    #: Runs after these diagnostics (registry names) when they are in the run, wherever it is listed.
    runs_after: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        options = to_plain(options, f"options of diagnostic {self.name or type(self).__name__!r}")
        if options is not None and not isinstance(options, Mapping):
            raise CerebroConfigError(f"options of diagnostic {self.name or type(self).__name__!r} must be a mapping, "
                                     f"got {type(options).__name__}: {options!r}")
        merged = {**dict(options or {}), **kwargs}
        self.options = validate_options(self.name or type(self).__name__, self.Options, merged)
        self.validate()

    def validate(self) -> None:
        """Checks across options (``self.options`` is typed already); raise :class:`CerebroConfigError`."""

    def check_model(self, model: nn.Module) -> None:
        """Checks that need the module but no data (e.g. a layer name). Runs in the callback's ``setup``."""

    def observe_forward(self, model: nn.Module) -> tuple[dict[str, nn.Module], Callable[[str, nn.Module, Any], None]] | None:
        """Optional: forward hooks ``(modules, fn(name, module, output))`` for the runner's one shared forward pass
        over all samples, instead of a pass of this diagnostic's own. ``ctx.observed[self.name]`` is set when the
        shared pass ran with these hooks, so :meth:`run` knows its hooks saw every sample."""
        return None

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        """Compute metrics, flags, arrays and figures into ``out``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The resolved options, for ``summary.json``."""
        return {self.name: dataclasses.asdict(self.options)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dataclasses.asdict(self.options)})"
