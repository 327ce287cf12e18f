"""Metrics as HTML tables: numbers with 4 significant digits and units, nested metrics as their own tables ordered
by what matters (largest error, most dead units, largest gradient ratio first), long tables collapsed with their top
rows shown. Engine internals (how a number was computed, not what was found) are split off for the report's
"run details" and left out of ``compare`` deltas. Every string is HTML-escaped here.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any, Optional, Sequence

from cerebro.report.findings import fmt

__all__ = ["ENGINE_KEYS", "is_engine_key", "split_metrics", "metric_tables", "kv_table", "value_text", "SHOWN_ROWS"]

#: Metrics that describe how the engine ran (chunking, calibration, precision, bookkeeping), not results.
ENGINE_KEYS = frozenset({
    "calibration_points_per_s", "chunk_points", "limit_points", "autocast", "oom_halvings", "samples_per_rank",
    "shared_pass", "evaluations", "steps_max", "steps_mean", "n_steps", "method", "forward_points", "layout",
    "layer_input", "layer_map_shape", "map_shape", "loss_reduction", "loss_source", "layers_without_tensor_output",
    "steps_rule", "random_orders", "replacement", "curve_score", "auc_scale", "frequencies_hz", "time_frequency",
    "baseline", "samples", "metric_samples", "prefix_tokens", "token_grid", "attention_modules", "source",
    "target_independent", "band_names", "sanity_checks", "unit_kind", "precision_decision", "spacing",
})
_ENGINE_PATTERN = re.compile(r"(^seconds_|_seconds$|^cost_ratio|calibration|_per_s$|^chunk_|^limit_)")
#: Rows shown before a long table collapses.
SHOWN_ROWS = 8
#: Order rows of a nested table by the first of these columns it has, largest first.
_PRIORITY = ("mean_error", "mean_abs_error", "error_rate", "dead_unit_fraction", "saturated_fraction", "zero_fraction",
             "ratio", "grad_norm", "score", "share")


def is_engine_key(key: str) -> bool:
    """Whether a metric (a top-level key, or any part of a dotted one) is an engine internal."""
    return any(part in ENGINE_KEYS or _ENGINE_PATTERN.search(part) for part in str(key).split("."))


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(results, engine internals)`` of one diagnostic's metrics."""
    results, engine = {}, {}
    for k, v in (metrics or {}).items():
        (engine if is_engine_key(k) else results)[k] = v
    return results, engine


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def _unit_kind(key: str) -> str:
    k = str(key).lower()
    if k.endswith("_s") or k in ("seconds", "time_s"):
        return "s"
    if k.endswith("_hz"):
        return "Hz"
    if k.endswith("_mb"):
        return "MB"
    if any(w in k for w in ("fraction", "share", "accuracy", "error_rate")):
        return "%"
    return ""


def value_text(value: Any, key: str = "") -> str:
    """One value as plain text: numbers with 4 significant digits and the key's unit, percentages for fractions,
    short lists inline, small dicts as ``k=v`` pairs."""
    unit = _unit_kind(key)
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        if unit == "%" and isinstance(value, float) or (unit == "%" and value in (0, 1)):
            return f"{fmt(100 * float(value), 3)}%"
        return fmt(value, 4) + (f" {unit}" if unit else "")
    if isinstance(value, dict):
        return "; ".join(f"{k}={value_text(v, str(k) if _unit_kind(str(k)) else key)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        items = [value_text(v, key) for v in value[:8]]
        return ", ".join(items) + (f", ... ({len(value)} values)" if len(value) > 8 else "")
    return str(value)


def _cell(value: Any, key: str = "") -> str:
    return f"<td{' class=num' if isinstance(value, (int, float)) and not isinstance(value, bool) else ''}>" \
           f"{escape(value_text(value, key))}</td>"


def _rows_table(head: Sequence[str], rows: list[str], title: str = "", note: str = "") -> str:
    """A table of already-rendered ``<tr>`` rows; more than ``SHOWN_ROWS + 2`` rows collapse after the first ones."""
    th = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
    cap = f"<caption>{escape(title)}{escape(note)}</caption>" if title or note else ""
    if len(rows) <= SHOWN_ROWS + 2:
        return f"<div class='wrap'><table>{cap}{th}{''.join(rows)}</table></div>"
    return (f"<div class='wrap'><table>{cap}{th}{''.join(rows[:SHOWN_ROWS])}</table>"
            f"<details><summary>all {len(rows)} rows</summary><table>{th}{''.join(rows[SHOWN_ROWS:])}</table>"
            "</details></div>")


def kv_table(pairs: Sequence[tuple[str, Any]], title: str = "", raw: bool = False) -> str:
    """A two-column ``name | value`` table (``raw``: values are already HTML)."""
    rows = [f"<tr><th>{escape(_label(k))}</th>{'<td>' + v + '</td>' if raw else _cell(v, k)}</tr>" for k, v in pairs]
    return _rows_table([], rows, title) if rows else ""


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _sort_key(rows: dict[str, dict[str, Any]]) -> Optional[str]:
    cols = {c for r in rows.values() for c, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return next((c for c in _PRIORITY if c in cols), None)


def _dict_rows(key: str, d: dict[str, dict[str, Any]], index: str) -> str:
    cols: list[str] = []
    for r in d.values():
        cols += [c for c in r if c not in cols]
    by = _sort_key(d)
    items = list(d.items())
    if by is not None:
        items.sort(key=lambda kv: -(kv[1].get(by) if isinstance(kv[1].get(by), (int, float)) else float("-inf")))
    rows = [f"<tr><th>{escape(str(k))}</th>" + "".join(_cell(r.get(c), c) for c in cols) + "</tr>" for k, r in items]
    note = f" (largest {_label(by)} first)" if by and len(items) > 1 else ""
    return _rows_table([index] + [_label(c) for c in cols], rows, _label(key), note)


def _list_of_dicts(key: str, items: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in items:
        cols += [c for c in r if c not in cols]
    rows = ["<tr>" + "".join(_cell(r.get(c), c) for c in cols) + "</tr>" for r in items]
    return _rows_table([_label(c) for c in cols], rows, _label(key))


def _index_word(key: str) -> str:
    k = key.lower()
    return "channel" if "channel" in k else "class" if "class" in k else "layer" if "layer" in k else \
        "parameter" if "param" in k else "group" if "group" in k else "index"


def _numbers(key: str, values: Sequence[Any], names: Optional[Sequence[str]]) -> str:
    """A long list of numbers (one per channel, class ...): ``index | value``, largest first when it is an
    importance, else in order."""
    word = _index_word(key)
    labels = [str(names[i]) if names is not None and word == "channel" and i < len(names) else str(i)
              for i in range(len(values))]
    pairs = list(zip(labels, values))
    ranked = "importance" in key or "share" in key
    if ranked:
        pairs.sort(key=lambda p: -(p[1] if isinstance(p[1], (int, float)) else float("-inf")))
    rows = [f"<tr><th>{escape(lab)}</th>{_cell(v, key)}</tr>" for lab, v in pairs]
    return _rows_table([word, _label(key)], rows, _label(key), " (largest first)" if ranked else "")


def metric_tables(metrics: dict[str, Any], channel_names: Optional[Sequence[str]] = None) -> str:
    """HTML for one diagnostic's (result) metrics: a ``metric | value`` table for the scalars and short lists, then
    one table per nested metric."""
    scalars, blocks = [], []
    for key, v in metrics.items():
        if _is_scalar(v):
            scalars.append((key, v))
        elif isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v):
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            if numeric and len(v) > 8 and not key.startswith("top_"):
                blocks.append(_numbers(key, v, channel_names))
            elif key == "top_channels" and channel_names:
                scalars.append((key, [channel_names[i] if isinstance(i, int) and i < len(channel_names) else i
                                      for i in v]))
            else:
                scalars.append((key, list(v)))
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            if all(isinstance(y, dict) for x in v.values() for y in x.values()) and \
                    all(x for x in v.values()):  # e.g. by_group: field -> group -> {n, mean_error}
                blocks += [_dict_rows(f"{key}: {sub}", x, sub) for sub, x in v.items()]
            else:
                blocks.append(_dict_rows(key, v, _index_word(key)))
        elif isinstance(v, dict) and all(_is_scalar(x) for x in v.values()):
            if len(v) <= 6:
                scalars.append((key, v))
            else:
                rows = [f"<tr><th>{escape(str(k))}</th>{_cell(x, key)}</tr>" for k, x in v.items()]
                blocks.append(_rows_table([_index_word(key), _label(key)], rows, _label(key)))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            blocks.append(_list_of_dicts(key, list(v)))
        else:
            scalars.append((key, value_text(v, key)))
    head = kv_table(scalars)
    return f"<div class='tables'>{head}{''.join(blocks)}</div>" if head or blocks else ""
