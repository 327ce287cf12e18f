"""Model quality against the naive baselines: one finding, judged once, that also says when predictions are constant.

Regression: RMSE against always predicting the mean. Classification: accuracy against always predicting the
majority class, judged by :func:`cerebro.report.evidence.majority_baseline`, the same function behind the
``predictions`` flag, for a constant classifier and any other alike. The ``predictions`` flags this finding states
(constant predictions, at or below a baseline) are not repeated as flag findings (:data:`QUALITY_FLAGS`).
"""

from __future__ import annotations

from typing import Any

from cerebro.report.evidence import BARELY, majority_baseline
from cerebro.report.findings.common import finding, fmt, metrics_of, num, pct

__all__ = ["QUALITY_FLAGS", "quality_findings"]

#: Prefixes of the ``predictions`` flags the model-quality finding already states (older wordings included, so a
#: summary written by an older cerebro reads the same).
QUALITY_FLAGS = ("constant predictions", "below the majority-class baseline",
                 "no better than the majority-class baseline", "no better than predicting the mean",
                 "no better than predicting the majority class")


def _regression(m: dict[str, Any], anchor: str, flagged: bool) -> list[dict[str, Any]]:
    rmse, base = num(m.get("rmse")), num(m.get("mean_predictor_rmse"))
    if rmse is None or base is None or base <= 0:
        return []
    gain = 1 - rmse / base
    extra = ", ".join(f"{label} {fmt(num(m.get(k)))}" for k, label in (("nrmse", "nRMSE"), ("r2", "R²"))
                      if num(m.get(k)) is not None)
    constant = m.get("constant_predictions") is True or flagged
    if gain <= 0 or constant:
        sev, text = "problem", (f"The model is no better than always predicting the mean: RMSE {fmt(rmse)} vs "
                                f"{fmt(base)}{f' ({extra})' if extra else ''}.")
    else:
        sev = "warning" if gain < 0.1 else "info"
        text = (f"The model {'barely beats' if sev == 'warning' else 'beats'} the naive baselines: RMSE {fmt(rmse)} "
                f"vs {fmt(base)} for always predicting the mean ({pct(gain)} lower{'; ' + extra if extra else ''}).")
    if constant:
        text += " It outputs the same value for every sample (constant predictions)."
    return [finding("model_quality", sev, text, "predictions", anchor, rmse=rmse, mean_predictor_rmse=base,
                    nrmse=num(m.get("nrmse")), r2=num(m.get("r2")), constant=constant or None)]


def _classification(m: dict[str, Any], anchor: str, flagged: bool) -> list[dict[str, Any]]:
    acc, maj = num(m.get("accuracy")), num(m.get("majority_class_accuracy"))
    if acc is None or maj is None:
        return []
    cls, const = m.get("majority_class"), m.get("constant_class")
    verdict = majority_baseline(acc, maj)
    of = f"always predicting the majority class{f' (class {cls})' if cls is not None else ''}"
    sev, text = {
        "below": ("problem", f"The model is below the majority-class baseline: accuracy {pct(acc)} vs {pct(maj)} "
                             f"for {of}."),
        "at": ("problem", f"The model is no better than {of}: accuracy {pct(acc)} vs {pct(maj)}."),
        "barely": ("warning", f"The model barely beats {of}: accuracy {pct(acc)} vs {pct(maj)} (less than "
                              f"{pct(BARELY)} above)."),
        "above": ("info", f"The model beats {of}: accuracy {pct(acc)} vs {pct(maj)}."),
    }[verdict]
    if const is not None or flagged:
        text += (f" It predicts {f'class {const}' if const is not None else 'the same class'} for every sample "
                 "(constant predictions).")
    return [finding("model_quality", sev, text, "predictions", anchor, accuracy=acc, majority_class_accuracy=maj,
                    majority_class=cls, constant_class=const, baseline=verdict)]


def quality_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The model-quality finding of ``s`` (none when ``predictions`` did not measure quality)."""
    m = metrics_of(s, "predictions")
    rec = (s.get("diagnostics") or {}).get("predictions") or {}
    flagged = any(str(f).startswith("constant predictions") for f in rec.get("flags") or [])  # older summaries
    return _regression(m, "d-predictions", flagged) or _classification(m, "d-predictions", flagged)
