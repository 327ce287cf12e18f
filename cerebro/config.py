"""Parse the diagnostics list from Python, YAML or Hydra into validated :class:`Diagnostic` instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from cerebro.diagnostics.base import Diagnostic
from cerebro.errors import CerebroConfigError
from cerebro.plain import to_plain
from cerebro.registry import get_diagnostic

__all__ = ["parse_diagnostics", "DEFAULT_DIAGNOSTICS"]

#: The six core diagnostics, in the order they run.
DEFAULT_DIAGNOSTICS = ("predictions", "gradients", "activations", "failure_modes", "integrated_gradients", "layer_gradcam")


def _entries(spec: Any) -> list[tuple[str, Any]]:
    spec = to_plain(spec, "`diagnostics`")
    if isinstance(spec, str):
        return [(spec, None)]
    if isinstance(spec, Mapping):
        # Mapping form {name: options}: `false` disables an entry (handy for Hydra overrides), `null`/`true` = defaults.
        return [(str(k), {} if v is True else v) for k, v in spec.items() if v is not False]
    if isinstance(spec, Sequence):
        out: list[tuple[str, Any]] = []
        for item in spec:
            if isinstance(item, Diagnostic):
                out.append((item.name, item))
            elif isinstance(item, str):
                out.append((item, None))
            elif isinstance(item, Mapping) and len(item) == 1:
                (k, v), = item.items()
                if v is not False:  # as in the mapping form: `false` drops the entry, `true`/`null` = defaults
                    out.append((str(k), {} if v is True else v))
            else:
                raise CerebroConfigError(
                    f"each diagnostics entry must be a name or a one-key mapping {{name: {{options}}}}, got {item!r}"
                )
        return out
    raise CerebroConfigError(f"`diagnostics` must be a list or a mapping of names, got {type(spec).__name__}: {spec!r}")


def parse_diagnostics(spec: Any) -> list[Diagnostic]:
    """Validate a diagnostics list (names, ``{name: options}`` entries, or a ``{name: options}`` mapping).

    Raises:
        CerebroConfigError: unknown names or options (naming the nearest valid one), wrong types, duplicates.
    """
    if spec is None:
        spec = list(DEFAULT_DIAGNOSTICS)
    diagnostics: list[Diagnostic] = []
    seen: set[str] = set()
    for name, options in _entries(spec):
        if isinstance(options, Diagnostic):
            diag = options
        else:
            if options is not None and not isinstance(options, (Mapping, DictConfig)):
                raise CerebroConfigError(f"options of diagnostic {name!r} must be a mapping, got {options!r}")
            diag = get_diagnostic(name)(options)
        if diag.name in seen:
            raise CerebroConfigError(f"diagnostic {diag.name!r} is listed twice")
        seen.add(diag.name)
        diagnostics.append(diag)
    if not diagnostics:
        raise CerebroConfigError("`diagnostics` is empty: list at least one of the registered diagnostics")
    return run_order(diagnostics)


def run_order(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The list order, except that a diagnostic with ``after_attributions`` / ``runs_after`` comes after the
    attribution diagnostics / the named diagnostics of the run it reads (a stable topological order)."""
    from cerebro.diagnostics.attribution import AttributionDiagnostic

    attributions = {d.name for d in diagnostics if isinstance(d, AttributionDiagnostic)}
    needs = {d.name: ({*d.runs_after} | (attributions if d.after_attributions else set())) - {d.name}
             for d in diagnostics}
    pending, ordered = list(diagnostics), []
    while pending:
        waiting = {d.name for d in pending}
        ready = next((d for d in pending if not needs[d.name] & waiting), None)
        if ready is None:
            raise CerebroConfigError(f"diagnostics {sorted(waiting)} each wait for another to run first")
        ordered.append(ready)
        pending.remove(ready)
    return ordered
