"""Typed errors raised by cerebro. Every configuration mistake is a :class:`CerebroConfigError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CerebroError", "CerebroConfigError", "AutopsyAbort", "AutopsyFailure", "DiagnosticSkipped", "suggest"]


class CerebroError(Exception):
    """Base class of every error cerebro raises on purpose."""


class CerebroConfigError(CerebroError, ValueError):
    """A configuration value is invalid: unknown name, wrong type, or incompatible with the model."""


class AutopsyAbort(CerebroError):
    """The autopsy cannot run at all (e.g. an empty sample set). ``summary.json`` is still written."""


class AutopsyFailure(CerebroError):
    """Raised in strict mode (``fail_on_error=True``) when a diagnostic or the autopsy failed."""


class DiagnosticSkipped(CerebroError):
    """Raised by a diagnostic that has nothing to measure on this model/data; recorded as ``skipped`` with the reason."""


def suggest(value: object, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest choice, or an empty string."""
    names = [c for c in choices if isinstance(c, str)]  # choices may include None (e.g. an optional setting)
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def choice_error(what: str, value: object, choices: Iterable[str]) -> CerebroConfigError:
    """Build the standard message: ``what`` can be one of [...], got value. Did you mean ...?"""
    choices = list(choices)
    return CerebroConfigError(f"`{what}` can be one of {choices}, got {value!r}.{suggest(value, choices)}")
