"""Send scalar autopsy metrics to the Trainer's Lightning loggers, under ``autopsy/<diagnostic>/<metric>``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["scalar_metrics", "log_summary"]

log = logging.getLogger("cerebro")


def scalar_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Finite numeric top-level metrics of every diagnostic, plus one ``ok`` flag per diagnostic."""
    out: dict[str, float] = {}
    for name, rec in summary.get("diagnostics", {}).items():
        out[f"autopsy/{name}/ok"] = float(rec["status"] == "ok")
        for key, value in rec.get("metrics", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"autopsy/{name}/{key}"] = float(value)
    return out


def log_summary(loggers: Sequence[Any], summary: dict[str, Any], step: int | None = None) -> None:
    """``logger.log_metrics`` for each logger; a logger that fails is noted, never fatal."""
    metrics = scalar_metrics(summary)
    for logger in loggers or ():
        try:
            logger.log_metrics(metrics, step=step)
            logger.save()
        except Exception as err:  # noqa: BLE001 - a logger problem never breaks the autopsy or training
            log.warning("cerebro: could not log the autopsy to %s: %s", type(logger).__name__, err)
