"""Registry of diagnostics by name (``@register_diagnostic("name")``), in the style of timm's ``_registry``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cerebro.errors import CerebroConfigError, choice_error

if TYPE_CHECKING:
    from cerebro.diagnostics.base import Diagnostic

__all__ = ["register_diagnostic", "get_diagnostic", "available_diagnostics"]

_REGISTRY: dict[str, type[Diagnostic]] = {}
D = TypeVar("D", bound="type[Diagnostic]")


def register_diagnostic(name: str) -> Callable[[D], D]:
    """Class decorator registering a :class:`cerebro.Diagnostic` under ``name``.

    The name is the YAML key, the folder of its arrays and the stem of its figures. Registering a second class
    under a taken name is an error unless it is the same class (re-imports are harmless).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise CerebroConfigError(f"diagnostic names must be Python identifiers, got {name!r}")

    def wrap(cls: D) -> D:
        from cerebro.diagnostics.base import Diagnostic

        if not (isinstance(cls, type) and issubclass(cls, Diagnostic)):
            raise CerebroConfigError(f"@register_diagnostic({name!r}) needs a subclass of cerebro.Diagnostic, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise CerebroConfigError(f"diagnostic {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    import cerebro.diagnostics  # noqa: F401  (registers the built-ins on import)


def available_diagnostics() -> list[str]:
    """Names of every registered diagnostic."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_diagnostic(name: str) -> type[Diagnostic]:
    """Return the class registered under ``name``; unknown names list what exists and suggest the nearest."""
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:  # a list or a mapping is no name (and not hashable)
        raise choice_error("diagnostics", name, sorted(_REGISTRY))
    return _REGISTRY[name]
