"""What every findings rule shares: the finding record, number formatting and reading a summary's records."""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

__all__ = ["SEVERITIES", "MAP", "fmt", "pct", "strip_numbers", "finding_key", "finding", "ok_record", "metrics_of",
           "num"]

SEVERITIES = ("problem", "warning", "info")
#: The mean |attribution| map every attribution diagnostic stores (``arrays/<diagnostic>/<MAP>``).
MAP = "mean_abs_attribution.npy"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?")


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no exponent between 1e-3 and 1e5); other values as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not np.isfinite(v):
        return str(v)
    if v != 0 and not 1e-3 <= abs(v) < 1e5:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def pct(v: float) -> str:
    """``v`` (a fraction) as a whole percentage."""
    return f"{100 * v:.0f}%"


def strip_numbers(text: str) -> str:
    """``text`` with every number replaced by ``#``: the same flag or finding with other numbers matches."""
    return _NUMBER.sub("#", str(text))


def finding_key(f: dict[str, Any]) -> str:
    """What identifies a finding across two autopsies: its kind, diagnostic and number-free text."""
    return f"{f.get('kind')}|{f.get('diagnostic')}|{strip_numbers(f.get('text', ''))}"


def finding(kind: str, severity: str, text: str, diagnostic: Optional[str], anchor: Optional[str] = None,
            **evidence: Any) -> dict[str, Any]:
    """One finding ``{kind, severity, text, diagnostic, evidence}``; ``evidence`` keeps the non-None numbers the text
    is made of and ``anchor``, the id of the report section that shows them."""
    ev = {k: v for k, v in evidence.items() if v is not None}
    if anchor:
        ev["anchor"] = anchor
    return {"kind": kind, "severity": severity, "text": text, "diagnostic": diagnostic, "evidence": ev}


def ok_record(summary: dict[str, Any], name: str) -> Optional[dict[str, Any]]:
    """The record of diagnostic ``name`` when it ran ``ok``, else None."""
    rec = (summary.get("diagnostics") or {}).get(name)
    return rec if isinstance(rec, dict) and rec.get("status") == "ok" else None


def metrics_of(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """The metrics of diagnostic ``name`` when it ran ``ok``, else ``{}``."""
    m = (ok_record(summary, name) or {}).get("metrics")
    return m if isinstance(m, dict) else {}


def num(v: Any) -> Optional[float]:
    """``v`` as a float when it is a finite number (not a bool), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None
