"""Which samples and groups fail: the worst samples and the metadata groups or classes with the largest errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from cerebro.report.findings.common import finding, fmt, metrics_of, num, pct

__all__ = ["failure_findings"]


def _worst(m: dict[str, Any]) -> list[dict[str, Any]]:
    worst = m.get("worst") if isinstance(m.get("worst"), list) else []
    err_key = next((k for k in ("abs_error", "loss") if worst and k in worst[0]), None)
    if not worst or not err_key:
        return []
    overall = num(m.get(f"mean_{err_key}"))
    top = worst[:3]
    text = (f"Worst samples: {', '.join(str(w.get('index')) for w in top)} ({err_key.replace('_', ' ')} "
            f"{', '.join(fmt(num(w.get(err_key))) for w in top)}"
            + (f" vs {fmt(overall)} on average" if overall is not None else "") + "); see the gallery.")
    return [finding("worst_samples", "info", text, "failure_modes", "gallery", indices=[w.get("index") for w in top],
                    errors=[w.get(err_key) for w in top])]


def _groups(m: dict[str, Any], anchor: str) -> list[dict[str, Any]]:
    out = []
    groups = m.get("by_group") if isinstance(m.get("by_group"), dict) else {}
    for field, g in groups.items():
        rows = [(k, v) for k, v in g.items() if isinstance(v, dict) and num(v.get("mean_error")) is not None]
        if len(rows) < 2:
            continue
        n_all = sum(int(v.get("n") or 0) for _, v in rows)
        mean = sum(v["mean_error"] * int(v.get("n") or 0) for _, v in rows) / max(n_all, 1)
        key, worst_g = max(rows, key=lambda kv: kv[1]["mean_error"])
        best_key, best_g = min(rows, key=lambda kv: kv[1]["mean_error"])
        ratio = worst_g["mean_error"] / mean if mean > 0 else None
        sev = "warning" if ratio is not None and ratio >= 1.5 and int(worst_g.get("n") or 0) >= 2 else "info"
        verb = "fails" if sev == "warning" else "does worst"
        out.append(finding("failing_group", sev, f"{field} = {key} {verb}: mean error {fmt(worst_g['mean_error'])} "
                           f"vs {fmt(mean)} over all {n_all} samples (n = {worst_g.get('n')}"
                           + (f", {fmt(ratio, 2)}x" if ratio else "") + f"); best: {field} = {best_key} "
                           f"({fmt(best_g['mean_error'])}).", "failure_modes", anchor, field=field, group=key,
                           mean_error=worst_g["mean_error"], overall=mean, ratio=ratio, n=worst_g.get("n")))
    by_class = m.get("error_rate_by_class") if isinstance(m.get("error_rate_by_class"), dict) else {}
    rates = {k: num(v) for k, v in by_class.items() if num(v) is not None}
    if len(rates) >= 2:
        k, r = max(rates.items(), key=lambda kv: kv[1])
        mean = float(np.mean(list(rates.values())))
        if r > 0 and r >= 1.5 * mean:
            out.append(finding("failing_group", "warning", f"Class {k} fails most: error rate {pct(r)} vs "
                               f"{pct(mean)} averaged over classes.", "failure_modes", anchor, field="class", group=k,
                               error_rate=r))
    return out


def failure_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The worst samples (see the gallery) and every metadata field's or class's failing group."""
    m = metrics_of(s, "failure_modes")
    return _worst(m) + _groups(m, "d-failure_modes")
