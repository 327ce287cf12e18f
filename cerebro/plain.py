"""Hydra/OmegaConf containers as plain Python values, with a config error for what does not resolve."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cerebro.errors import CerebroConfigError

__all__ = ["to_plain"]


def to_plain(value: Any, what: str) -> Any:
    """``value`` resolved to dicts and lists when it is a ``DictConfig``/``ListConfig``, else unchanged; an
    interpolation that does not resolve raises :class:`CerebroConfigError` starting with ``what``."""
    if not isinstance(value, (DictConfig, ListConfig)):
        return value
    try:
        return OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as err:  # e.g. an interpolation that does not resolve
        raise CerebroConfigError(f"{what}: {str(err).splitlines()[0]}") from None
