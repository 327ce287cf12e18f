"""Whether two attribution methods agree on where the evidence is: judged once per pair, from all the evidence.

The mean maps' rank correlation, the overlap of their time windows and their rank correlation over each worst
sample of the gallery go into :func:`cerebro.report.evidence.judge_agreement`, whose thresholds (``AGREE``,
``DISAGREE``, ``OVERLAP``) are the only ones; one finding per pair states the verdict and every piece of evidence
behind it, so the mean maps and the worst samples can never be said to agree and disagree in two findings.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Optional

from cerebro.report.evidence import AGREE, DISAGREE, OVERLAP, judge_agreement, map_agreement
from cerebro.report.findings.common import finding, fmt, num, pct
from cerebro.report.findings.where import Located, span

__all__ = ["summary_gallery", "agreement_findings"]


def summary_gallery(metrics: dict[str, Any], s: dict[str, Any]) -> list[Any]:
    """The worst-case gallery records (written before the findings), when failure_modes produced its metrics."""
    g = s.get("gallery") if metrics else None
    return g if isinstance(g, list) else []


def _overlap(wa: Optional[dict[str, Any]], wb: Optional[dict[str, Any]]) -> Optional[float]:
    if not (wa and wb and wa["concentrated"] and wb["concentrated"]):
        return None
    inter = min(wa["stop"], wb["stop"]) - max(wa["start"], wb["start"]) + 1
    union = max(wa["stop"], wb["stop"]) - min(wa["start"], wb["start"]) + 1
    return max(inter, 0) / union


def _samples(gallery: list[Any], a: str, b: str) -> list[tuple[Any, float]]:
    out = []
    for g in gallery:
        for rec in (g.get("agreement") or []) if isinstance(g, dict) else ():
            rho = num(rec.get("spearman")) if isinstance(rec, dict) else None
            if rho is not None and sorted(rec.get("methods") or []) == sorted([a, b]):
                out.append((g.get("index"), rho))
    return out


def _describe(p: dict[str, Any], wa: Optional[dict[str, Any]], wb: Optional[dict[str, Any]]) -> str:
    if p["evidence"] == "mean_maps":
        return f"rank correlation of the mean maps {fmt(p['spearman'], 2)}"
    if p["evidence"] == "time_windows":
        return f"time windows ({span(wa or {})} and {span(wb or {})}) overlap {pct(p['overlap'])}"
    text = f"rank correlation on the {p['n']} worst samples {', '.join(fmt(r, 2) for r in p['spearman'])}"
    if p["split"]:
        text += (f" (below {DISAGREE} on {len(p['split'])} of the {p['n']}: sample"
                 f"{'s' if len(p['split']) > 1 else ''} {', '.join(map(str, p['split']))})")
    return text


def _pairs(maps: dict[str, Any], gallery: list[Any]) -> list[tuple[str, str]]:
    pairs = list(combinations(maps, 2))
    for g in gallery:
        for rec in (g.get("agreement") or []) if isinstance(g, dict) else ():
            ab = tuple(rec.get("methods") or []) if isinstance(rec, dict) else ()
            if len(ab) == 2 and ab not in pairs and ab[::-1] not in pairs:
                pairs.append(ab)
    return pairs


def agreement_findings(located: Located, gallery: list[Any], untrusted: dict[str, str]) -> list[dict[str, Any]]:
    """One finding per pair of methods with comparable maps: ``agree``, ``partly agree`` or ``disagree``, with the
    evidence for and against; a warning when both may be read and they disagree or part ways on a worst sample."""
    maps, found = located
    out = []
    for a, b in _pairs(maps, gallery):
        rho = map_agreement(maps[a], maps[b]) if a in maps and b in maps else None
        wa, wb = (found.get(a) or {}).get("window"), (found.get(b) or {}).get("window")
        overlap = _overlap(wa, wb)
        samples = _samples(gallery, a, b)
        j = judge_agreement(rho, overlap, samples)
        if j["verdict"] is None:
            continue
        pro = [_describe(p, wa, wb) for p in j["pieces"] if p["says"] != "disagree"]
        con = [_describe(p, wa, wb) for p in j["pieces"] if p["says"] == "disagree"]
        if j["verdict"] == "partly agree" and pro and con:
            facts = f"{'; '.join(pro)}; but {' and '.join(con)}"
        else:
            facts = "; ".join(pro + con)
        text = (f"{a} and {b} {j['verdict']} on where the evidence is: {facts}. Thresholds: a rank correlation "
                f"agrees at {AGREE} or above and disagrees below {DISAGREE}"
                + (f"; time windows agree when they overlap at least {pct(OVERLAP)}" if overlap is not None else "")
                + ".")
        ruled_out = [m for m in (a, b) if m in untrusted]
        # a disagreement matters when both maps may be read; with a map ruled out, it only tells what is known
        warn = not ruled_out and (j["verdict"] == "disagree" or bool(j["split"]))
        if warn:
            text += (" Compare their maps in the gallery before trusting either." if j["split"] else
                     " Compare their maps before trusting either.")
        for m in ruled_out:
            text += (f" {m} is not to be read anyway ({untrusted[m]})." if j["verdict"] == "disagree" else
                     f" Do not read {m} ({untrusted[m]}): agreeing with it vouches for nothing.")
        out.append(finding("agreement", "warning" if warn else "info", text, None, "gallery" if j["split"] else
                           f"d-{a}", methods=[a, b], verdict=j["verdict"], spearman=rho, overlap=overlap,
                           worst_split=j["split"] or None, worst_n=j["n_samples"] or None,
                           worst_spearman=[r for _, r in samples] or None))
    return out
