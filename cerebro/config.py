"""Parse the diagnostics list from Python, YAML or Hydra into validated :class:`Diagnostic` instances, and lay a
user's diagnostics over a preset's (:func:`layer_diagnostics`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from cerebro.diagnostics.base import Diagnostic
from cerebro.errors import CerebroConfigError
from cerebro.plain import to_plain
from cerebro.registry import get_diagnostic

__all__ = ["parse_diagnostics", "layer_diagnostics", "diagnostics_overrides", "DEFAULT_DIAGNOSTICS"]

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


def _merged(base: Any, change: Any) -> Any:
    """``change`` deep-merged onto ``base`` as OmegaConf merges: mappings key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(change, Mapping):
        out = dict(base)
        for key, value in change.items():
            out[key] = _merged(out[key], value) if key in out else value
        return out
    return change


def layer_diagnostics(diagnostics: Any, preset: Any) -> Any:
    """The diagnostics spec that runs when ``diagnostics`` (the user's) is laid over ``preset`` (a preset's mapping
    ``{name: options}``, e.g. the Hydra config group ``autopsy/preset_diagnostics``).

    * ``preset`` None: ``diagnostics`` unchanged (the Python API, and YAMLs without a preset).
    * ``diagnostics`` None: the preset's mapping.
    * a mapping: the preset's mapping merged with it, as Hydra merges YAMLs (``name: false`` switches one off,
      ``name: null`` resets it to the diagnostic's own defaults), in the preset's order, new names after.
    * a list (or one name): exactly the listed diagnostics, in that order, each with the preset's options for it
      overlaid by the entry's own (``name`` or ``{name: null}`` takes the preset's options as they are).

    Raises:
        CerebroConfigError: a preset that is not a mapping of names, or an interpolation that does not resolve.
    """
    preset = to_plain(preset, "`preset_diagnostics`")
    if preset is None:
        return diagnostics
    if not isinstance(preset, Mapping):
        raise CerebroConfigError(f"`preset_diagnostics` must be a mapping {{name: {{options}}}} (a preset's "
                                 f"diagnostics), got {type(preset).__name__}: {preset!r}")
    preset = {str(k): v for k, v in preset.items()}
    diagnostics = to_plain(diagnostics, "`diagnostics`")
    if diagnostics is None:
        return preset
    if isinstance(diagnostics, Mapping):
        return _merged(preset, diagnostics)
    if isinstance(diagnostics, str):
        diagnostics = [diagnostics]
    if not isinstance(diagnostics, Sequence):
        return diagnostics  # parse_diagnostics names the wrong type

    def options(name: Any) -> dict[str, Any]:
        base = preset.get(str(name))
        return dict(base) if isinstance(base, Mapping) else {}

    listed: list[Any] = []
    for item in diagnostics:
        if isinstance(item, str):
            listed.append({item: options(item)})
        elif isinstance(item, Mapping) and len(item) == 1:
            (name, value), = item.items()
            base = options(name)
            listed.append({name: base if value is None or value is True else
                           _merged(base, value) if isinstance(value, Mapping) else value})
        else:
            listed.append(item)  # a Diagnostic instance, or something parse_diagnostics explains
    return listed


#: Command-line edits of ``autopsy.diagnostics`` that ``cerebro-autopsy`` and ``cerebro-demo`` accept as shorthands.
_EDIT = re.compile(r"autopsy\.diagnostics\.[^=~+]+=.*", re.DOTALL)
_DROP = re.compile(r"~autopsy\.diagnostics\.([A-Za-z_][A-Za-z0-9_]*)")
_GROUP = re.compile(r"(~?)autopsy/diagnostics(=.*)?", re.DOTALL)


def diagnostics_overrides(overrides: Sequence[str]) -> list[str]:
    """Hydra overrides with the shorthands of ``cerebro-autopsy`` and ``cerebro-demo`` spelled out.

    The composed ``autopsy.diagnostics`` is null until something sets it (the preset's set is
    ``autopsy.preset_diagnostics``), so in Hydra's struct mode an edit of one of its keys needs ``++``. Here
    ``autopsy.diagnostics.X.key=value`` becomes ``++autopsy.diagnostics.X.key=value``, ``~autopsy.diagnostics.X``
    becomes ``++autopsy.diagnostics.X=false`` (both laid over the preset by :func:`layer_diagnostics`) and the
    group's former name ``autopsy/diagnostics`` becomes ``autopsy/preset_diagnostics``. Anything else is unchanged.
    """
    out: list[str] = []
    for arg in overrides:
        drop, group = _DROP.fullmatch(arg), _GROUP.fullmatch(arg)
        if _EDIT.fullmatch(arg):
            arg = f"++{arg}"
        elif drop:
            arg = f"++autopsy.diagnostics.{drop.group(1)}=false"
        elif group:
            arg = f"{group.group(1)}autopsy/preset_diagnostics{group.group(2) or ''}"
        out.append(arg)
    return out
