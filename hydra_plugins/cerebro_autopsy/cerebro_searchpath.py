"""Registers cerebro's YAML configs with Hydra, the standard way for libraries (a ``SearchPathPlugin``).

Hydra imports every module under the ``hydra_plugins`` namespace package when an app starts (``@hydra.main``,
``initialize``/``compose``), so any project that has cerebro installed can write ``defaults: [default, _self_]``
in its own ``conf/autopsy/*.yaml`` and find ``autopsy/default``, ``autopsy/eeg_regression``, ... in cerebro's
configs, with no path juggling. The configs are ``cerebro/_configs`` in a wheel, and the checkout's ``configs/``
folder in an editable install (where ``cerebro/_configs`` does not exist).

This module must stay cheap to import: it locates the package with ``importlib.util.find_spec`` (which does not
run ``cerebro/__init__.py``, so torch is not imported by every Hydra app of the environment).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

__all__ = ["CerebroSearchPathPlugin", "cerebro_config_dir"]


def cerebro_config_dir() -> Path | None:
    """cerebro's config folder: ``<package>/_configs`` (wheel) or ``<checkout>/configs`` (editable), else None."""
    spec = importlib.util.find_spec("cerebro")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        package = Path(location)
        for candidate in (package / "_configs", package.parent / "configs"):
            if (candidate / "autopsy").is_dir():
                return candidate
    return None


class CerebroSearchPathPlugin(SearchPathPlugin):
    """Appends cerebro's configs to every Hydra app's search path (after the app's own, so the app's win)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = cerebro_config_dir()
        if folder is not None:
            search_path.append(provider="cerebro", path=f"file://{folder.resolve().as_posix()}")
