"""Findings: what an autopsy says, in plain words, computed from its results (``summary.json`` and the mean maps).

Each finding is ``{kind, severity: info | warning | problem, text, diagnostic, evidence}``; ``evidence`` holds the
numbers the text is made of and ``anchor``, the id of the report section that shows them. They are stored as the
summary's top-level ``findings`` and read by the report (first thing on the page), the loggers and ``compare``.

Rules, in reading order: model quality against the naive baselines; which methods passed the sanity checks (and
the faithfulness verdicts, issue 14); where the evidence is and whether methods agree; frequency bands (spectral
IG, issue 15); which samples and groups fail; health (gradients, activations); failed diagnostics and warnings.
A rule whose diagnostic is absent, failed or shaped differently adds nothing.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cerebro.report.evidence import AGREE, DISAGREE, map_agreement, map_evidence

__all__ = ["SEVERITIES", "compute_findings", "findings_of", "finding_key", "strip_numbers", "sanity_verdicts", "untrusted_methods",
           "display_status", "fmt"]

SEVERITIES = ("problem", "warning", "info")
_MAP = "mean_abs_attribution.npy"
#: Health and trust diagnostics whose flags the rules below turn into findings themselves.
_OWN_FLAGS = {"gradients", "activations", "sanity_checks", "faithfulness", "spectral_integrated_gradients"}
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


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def strip_numbers(text: str) -> str:
    """``text`` with every number replaced by ``#``: the same flag or finding with other numbers matches."""
    return _NUMBER.sub("#", str(text))


def finding_key(f: dict[str, Any]) -> str:
    """What identifies a finding across two autopsies: its kind, diagnostic and number-free text."""
    return f"{f.get('kind')}|{f.get('diagnostic')}|{strip_numbers(f.get('text', ''))}"


def _f(kind: str, severity: str, text: str, diagnostic: Optional[str], anchor: Optional[str] = None,
       **evidence: Any) -> dict[str, Any]:
    ev = {k: v for k, v in evidence.items() if v is not None}
    if anchor:
        ev["anchor"] = anchor
    return {"kind": kind, "severity": severity, "text": text, "diagnostic": diagnostic, "evidence": ev}


def _ok(summary: dict[str, Any], name: str) -> Optional[dict[str, Any]]:
    rec = (summary.get("diagnostics") or {}).get(name)
    return rec if isinstance(rec, dict) and rec.get("status") == "ok" else None


def _metrics(summary: dict[str, Any], name: str) -> dict[str, Any]:
    rec = _ok(summary, name)
    m = (rec or {}).get("metrics")
    return m if isinstance(m, dict) else {}


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


# -- trust: sanity checks and faithfulness ------------------------------------------------------------------------
def sanity_verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {"verdict": "pass" | "fail", "why": [failed checks]}}`` from ``sanity_checks`` (empty when it did
    not run)."""
    methods = _metrics(summary, "sanity_checks").get("methods") or {}
    out = {}
    for name, m in methods.items() if isinstance(methods, dict) else ():
        if not isinstance(m, dict):
            continue
        why = []
        if "error" in m:
            why.append(f"could not run: {m['error']}")
        if m.get("model_randomization") == "fail":
            rho = _num(m.get("final_spearman"))
            why.append("maps barely change when the weights are randomized"
                       + (f" (Spearman {fmt(rho, 2)})" if rho is not None else ""))
        if m.get("target_randomization") == "fail":
            why.append("maps of another class look the same")
        if m.get("completeness") == "fail":
            why.append("IG attributions do not sum to f(x) - f(baseline)")
        if m.get("degenerate"):
            why.append("degenerate map (constant, zero or non-finite)")
        out[name] = {"verdict": "fail" if why else "pass", "why": why}
    return out


def untrusted_methods(summary: dict[str, Any]) -> dict[str, str]:
    """``{method: why}`` for every method whose maps should not be read: failed sanity checks, or a faithfulness
    verdict ``do_not_read``. The report marks these wherever their maps appear."""
    out = {n: "failed sanity checks: " + "; ".join(v["why"]) for n, v in sanity_verdicts(summary).items()
           if v["verdict"] == "fail"}
    faith = _metrics(summary, "faithfulness").get("methods") or {}
    for n, rec in faith.items() if isinstance(faith, dict) else ():
        if isinstance(rec, dict) and rec.get("verdict") == "do_not_read" and n not in out:
            out[n] = f"faithfulness: do not read ({rec.get('verdict_reason') or 'no more faithful than random'})"
    return out


def display_status(summary: dict[str, Any]) -> str:
    """The status line of the report: ``ok, with warnings`` when the run is ok but a finding is a warning or a
    problem (a method failed its sanity checks, a group fails, a layer is dead ...)."""
    status = str(summary.get("status"))
    findings = summary.get("findings") or []
    if status == "ok" and any(f.get("severity") in ("warning", "problem") for f in findings if isinstance(f, dict)):
        return "ok, with warnings"
    return status


def _quality(s: dict[str, Any]) -> list[dict[str, Any]]:
    m = _metrics(s, "predictions")
    anchor = "d-predictions"
    rmse, base = _num(m.get("rmse")), _num(m.get("mean_predictor_rmse"))
    if rmse is not None and base is not None and base > 0:
        gain = 1 - rmse / base
        extra = ", ".join(f"{label} {fmt(_num(m.get(k)))}" for k, label in (("nrmse", "nRMSE"), ("r2", "R²"))
                          if _num(m.get(k)) is not None)
        if gain <= 0:
            sev, text = "problem", (f"The model is no better than always predicting the mean: RMSE {fmt(rmse)} vs "
                                    f"{fmt(base)}{f' ({extra})' if extra else ''}.")
        else:
            sev = "warning" if gain < 0.1 else "info"
            text = (f"The model beats the naive baselines: RMSE {fmt(rmse)} vs {fmt(base)} for always predicting the "
                    f"mean ({_pct(gain)} lower{'; ' + extra if extra else ''}).")
            if sev == "warning":
                text = text.replace("beats", "barely beats")
        return [_f("model_quality", sev, text, "predictions", anchor, rmse=rmse, mean_predictor_rmse=base,
                   nrmse=_num(m.get("nrmse")), r2=_num(m.get("r2")))]
    acc, maj = _num(m.get("accuracy")), _num(m.get("majority_class_accuracy"))
    if acc is not None and maj is not None:
        sev = "problem" if acc <= maj else "warning" if acc < maj + 0.05 else "info"
        verb = "is no better than" if acc <= maj else "barely beats" if sev == "warning" else "beats"
        return [_f("model_quality", sev, f"The model {verb} always predicting the majority class: accuracy "
                   f"{_pct(acc)} vs {_pct(maj)}.", "predictions", anchor, accuracy=acc, majority_class_accuracy=maj)]
    return []


def _sanity(s: dict[str, Any], methods: list[str]) -> list[dict[str, Any]]:
    rec = (s.get("diagnostics") or {}).get("sanity_checks")
    if rec is None:
        if methods:
            return [_f("sanity", "warning", f"Sanity checks were not run, so nothing says whether the maps of "
                       f"{', '.join(methods)} depend on the model: add sanity_checks to the diagnostics.", None)]
        return []
    if rec.get("status") != "ok":
        return [_f("sanity", "warning", f"Sanity checks {rec.get('status')}: {rec.get('reason') or 'no reason'}; "
                   "the maps are unchecked.", "sanity_checks", "sanity")]
    verdicts = sanity_verdicts(s)
    out = [_f("sanity", "problem", f"{n} failed the sanity checks ({'; '.join(v['why'])}): do not read its maps.",
              "sanity_checks", "sanity", method=n, checks=v["why"]) for n, v in verdicts.items() if v["verdict"] == "fail"]
    passed = [n for n, v in verdicts.items() if v["verdict"] == "pass"]
    if passed:
        out.append(_f("sanity", "info", f"{', '.join(passed)} passed the sanity checks (maps change when the weights "
                      "are randomized): read these maps.", "sanity_checks", "sanity", methods=passed))
    return out


def _faithfulness(s: dict[str, Any]) -> list[dict[str, Any]]:
    m = _metrics(s, "faithfulness")
    methods = m.get("methods")
    if not isinstance(methods, dict) or not methods:
        return []
    bad = [n for n, r in methods.items() if isinstance(r, dict) and r.get("verdict") == "do_not_read"]
    care = [n for n, r in methods.items() if isinstance(r, dict) and r.get("verdict") == "care"]
    best = m.get("recommended")
    scores = {n: _num(r.get("score")) for n, r in methods.items() if isinstance(r, dict)}
    if best:
        text = f"Read {best}'s maps (faithfulness score {fmt(scores.get(best))}, the most faithful of this run)"
    else:
        text = "No map of this run is more faithful than random order: read none of them"
    if bad:
        text += f"; do not read {', '.join(bad)}"
    if care:
        text += f"; read {', '.join(care)} with care"
    return [_f("faithfulness", "problem" if not best else "warning" if bad else "info", text + ".", "faithfulness",
               "d-faithfulness", recommended=best, do_not_read=bad, care=care, scores=scores)]


# -- where the evidence is ----------------------------------------------------------------------------------------
def _load_maps(s: dict[str, Any], root: Optional[Path]) -> dict[str, np.ndarray]:
    maps = {}
    for n, rec in (s.get("diagnostics") or {}).items():
        if rec.get("status") == "ok" and f"arrays/{n}/{_MAP}" in (rec.get("artifacts") or []) and root is not None:
            try:
                maps[n] = np.load(root / "arrays" / n / _MAP)
            except (OSError, ValueError):
                continue
    return maps


def _span(w: dict[str, Any]) -> str:
    return f"{w['start_s']:.2f}-{w['stop_s']:.2f} s" if "start_s" in w else f"samples {w['start']}-{w['stop']}"


def _window_text(w: dict[str, Any]) -> str:
    if "start_s" in w:
        return f"between {w['start_s']:.2f} and {w['stop_s']:.2f} s (peak {w['peak_s']:.2f} s)"
    return f"between samples {w['start']} and {w['stop']} (peak at sample {w['peak']})"


def _evidence(s: dict[str, Any], root: Optional[Path]) -> list[dict[str, Any]]:
    maps = _load_maps(s, root)
    shape = (s.get("samples") or {}).get("input_shape") or []
    eeg = s.get("eeg") if isinstance(s.get("eeg"), dict) and "error" not in s.get("eeg", {}) else {}
    sfreq, names = eeg.get("sfreq"), eeg.get("channel_names")
    untrusted = untrusted_methods(s)
    out, found = [], {}
    for n, m in maps.items():
        e = map_evidence(m, shape, sfreq, names)
        found[n] = e
        parts = []
        if e.get("channels"):
            parts.append(f"on channel{'s' if len(e['channels']) > 1 else ''} {', '.join(e['channels'])} ({_pct(e['channel_share'])} of the map on "
                         f"{_pct(e['channel_area'])} of the channels)")
        elif e["layout"] == "channel_time":
            parts.append("spread over the channels (none stands out)")
        w = e.get("window")
        if w and w["concentrated"]:
            parts.append(_window_text(w))
        elif w:
            parts.append("spread over the whole time window (no clear peak)")
        if e.get("region"):
            r = e["region"]
            parts.append(f"in rows {r['rows'][0]}-{r['rows'][1]}, columns {r['cols'][0]}-{r['cols'][1]} "
                         f"({_pct(r['share'])} of the map on {_pct(r['area'])} of the image)")
        if e.get("feature_indices"):
            parts.append(f"on positions {', '.join(map(str, e['feature_indices']))} ({_pct(e['feature_share'])} "
                         "of the map)")
        if not parts:
            continue
        sev, tail = "info", ""
        if n in untrusted:
            sev, tail = "warning", f" But do not read it: {untrusted[n]}."
        out.append(_f("evidence", sev, f"{n}: the evidence is {' '.join(parts)}.{tail}", n, f"d-{n}",
                      channels=e.get("channels"), channel_indices=e.get("channel_indices"),
                      window=w, region=e.get("region"), features=e.get("feature_indices"), trusted=n not in untrusted))
    for a, b in combinations(list(maps), 2):
        rho = map_agreement(maps[a], maps[b])
        if rho is None:
            continue
        wa, wb = found[a].get("window"), found[b].get("window")
        overlap = None
        if wa and wb and wa["concentrated"] and wb["concentrated"]:
            inter = min(wa["stop"], wb["stop"]) - max(wa["start"], wb["start"]) + 1
            union = max(wa["stop"], wb["stop"]) - min(wa["start"], wb["start"]) + 1
            overlap = max(inter, 0) / union
        if rho >= AGREE or (overlap is not None and overlap >= 0.3):
            verdict, sev = "agree", "info"
        elif rho < DISAGREE and not overlap:
            verdict, sev = "disagree", "warning"
        else:
            verdict, sev = "partly agree", "info"
        text = f"{a} and {b} {verdict} on where the evidence is (rank correlation of the mean maps {fmt(rho, 2)}"
        if overlap is not None:
            text += f"; time windows {_span(wa)} and {_span(wb)} overlap {_pct(overlap)}"
        out.append(_f("agreement", sev, text + ").", None, f"d-{a}", methods=[a, b], spearman=rho, overlap=overlap,
                      verdict=verdict))
    return out


def _spectral(s: dict[str, Any]) -> list[dict[str, Any]]:
    name = "spectral_integrated_gradients"
    rec, m = _ok(s, name), _metrics(s, name)
    if rec is None:
        return []
    out = []
    band = m.get("dominant_band")
    shares = m.get("band_share") if isinstance(m.get("band_share"), dict) else {}
    if band:
        edges = (m.get("band_edges_hz") or {}).get(band) if isinstance(m.get("band_edges_hz"), dict) else None
        rng = f" ({fmt(edges[0])}-{fmt(edges[1])} Hz)" if isinstance(edges, list) and len(edges) == 2 else ""
        share = _num(shares.get(band)) if isinstance(band, str) else None
        peak = _num(m.get("peak_frequency_hz"))
        chans = m.get("dominant_channel_names") or m.get("dominant_channels") or []
        text = (f"Frequency: most evidence is in the {band} band{rng}"
                + (f", {_pct(share)} of |attribution|" if share is not None else "")
                + (f", peak at {fmt(peak)} Hz" if peak is not None else "")
                + (f", on channels {', '.join(map(str, chans[:5]))}" if chans else "") + ".")
        out.append(_f("spectral", "info", text, name, f"d-{name}", band=band, band_share=share, peak_hz=peak,
                      channels=chans[:5] or None))
    for flag in rec.get("flags") or []:
        if "confound" in str(flag).lower():
            out.append(_f("spectral_confound", "warning", f"Possible confound: {flag}.", name, f"d-{name}",
                          flag=flag))
    return out


# -- failures, health, the run ------------------------------------------------------------------------------------
def _failures(s: dict[str, Any]) -> list[dict[str, Any]]:
    m = _metrics(s, "failure_modes")
    anchor, out = "d-failure_modes", []
    worst = m.get("worst") if isinstance(m.get("worst"), list) else []
    err_key = next((k for k in ("abs_error", "loss") if worst and k in worst[0]), None)
    overall = _num(m.get(f"mean_{err_key}")) if err_key else None
    if worst and err_key:
        top = worst[:3]
        text = (f"Worst samples: {', '.join(str(w.get('index')) for w in top)} ({err_key.replace('_', ' ')} "
                f"{', '.join(fmt(_num(w.get(err_key))) for w in top)}"
                + (f" vs {fmt(overall)} on average" if overall is not None else "") + "); see the gallery.")
        out.append(_f("worst_samples", "info", text, "failure_modes", "gallery",
                      indices=[w.get("index") for w in top], errors=[w.get(err_key) for w in top]))
    gallery = [g for g in summary_gallery(m, s) if isinstance(g, dict)]
    split = [g for g in gallery if any(a.get("disagree") for a in g.get("agreement") or [])]
    if split:
        pairs = sorted({" and ".join(a["methods"]) for g in split for a in g["agreement"] if a.get("disagree")})
        out.append(_f("gallery_disagreement", "warning", f"Methods disagree on {len(split)} of the {len(gallery)} "
                      f"worst samples ({', '.join(str(g.get('index')) for g in split)}: {'; '.join(pairs)}, rank "
                      f"correlation below {DISAGREE}): compare their maps in the gallery before trusting either.",
                      "failure_modes", "gallery", indices=[g.get("index") for g in split], pairs=pairs))
    groups = m.get("by_group") if isinstance(m.get("by_group"), dict) else {}
    for field, g in groups.items():
        rows = [(k, v) for k, v in g.items() if isinstance(v, dict) and _num(v.get("mean_error")) is not None]
        if len(rows) < 2:
            continue
        n_all = sum(int(v.get("n") or 0) for _, v in rows)
        mean = sum(v["mean_error"] * int(v.get("n") or 0) for _, v in rows) / max(n_all, 1)
        key, worst_g = max(rows, key=lambda kv: kv[1]["mean_error"])
        best_key, best_g = min(rows, key=lambda kv: kv[1]["mean_error"])
        ratio = worst_g["mean_error"] / mean if mean > 0 else None
        sev = "warning" if ratio is not None and ratio >= 1.5 and int(worst_g.get("n") or 0) >= 2 else "info"
        verb = "fails" if sev == "warning" else "does worst"
        out.append(_f("failing_group", sev, f"{field} = {key} {verb}: mean error {fmt(worst_g['mean_error'])} vs "
                      f"{fmt(mean)} over all {n_all} samples (n = {worst_g.get('n')}"
                      + (f", {fmt(ratio, 2)}x" if ratio else "") + f"); best: {field} = {best_key} "
                      f"({fmt(best_g['mean_error'])}).", "failure_modes", anchor, field=field, group=key,
                      mean_error=worst_g["mean_error"], overall=mean, ratio=ratio, n=worst_g.get("n")))
    by_class = m.get("error_rate_by_class") if isinstance(m.get("error_rate_by_class"), dict) else {}
    rates = {k: _num(v) for k, v in by_class.items() if _num(v) is not None}
    if len(rates) >= 2:
        k, r = max(rates.items(), key=lambda kv: kv[1])
        mean = float(np.mean(list(rates.values())))
        if r > 0 and r >= 1.5 * mean:
            out.append(_f("failing_group", "warning", f"Class {k} fails most: error rate {_pct(r)} vs {_pct(mean)} "
                          "averaged over classes.", "failure_modes", anchor, field="class", group=k, error_rate=r))
    return out


def summary_gallery(metrics: dict[str, Any], s: dict[str, Any]) -> list[Any]:
    """The worst-case gallery records (written before the findings), when failure_modes produced its metrics."""
    g = s.get("gallery") if metrics else None
    return g if isinstance(g, list) else []


def _health(s: dict[str, Any]) -> list[dict[str, Any]]:
    out, checked = [], []
    for name in ("gradients", "activations"):
        rec = _ok(s, name)
        if rec is None:
            continue
        checked.append(name)
        for flag in rec.get("flags") or []:
            sev = "problem" if "non-finite" in flag or "exploding" in flag else "warning"
            out.append(_f("health", sev, f"{name}: {flag}.", name, f"d-{name}", flag=flag))
    if checked and not out:
        layers = _metrics(s, "activations").get("layers")
        per = _metrics(s, "gradients").get("per_parameter")
        what = [f"{layers} layers" if layers else None, f"{len(per)} parameter tensors" if isinstance(per, dict)
                else None]
        out.append(_f("health", "info", "Healthy: no dead or saturated layers, no vanishing, exploding or non-finite "
                      f"gradients ({', '.join(w for w in what if w) or ', '.join(checked)} checked).", checked[0],
                      f"d-{checked[0]}"))
    return out


def _run(s: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, rec in (s.get("diagnostics") or {}).items():
        if rec.get("status") == "failed":
            out.append(_f("diagnostic_failed", "problem", f"{n} failed: {rec.get('reason')}", n, f"d-{n}"))
        elif rec.get("status") == "ok" and n not in _OWN_FLAGS:
            skip = ("no better than predicting the mean", "constant predictions")
            for flag in rec.get("flags") or []:
                if not str(flag).startswith(skip):
                    out.append(_f("flag", "warning", f"{n}: {flag}.", n, f"d-{n}", flag=flag))
    for w in s.get("warnings") or []:
        out.append(_f("run_warning", "warning", f"{w}.", None))
    return out


def compute_findings(summary: dict[str, Any], root: str | Path | None = None) -> list[dict[str, Any]]:
    """The findings of an autopsy ``summary``; ``root`` (its output folder) lets the rules read the mean maps."""
    folder = Path(root) if root is not None else None
    methods = [n for n, r in (summary.get("diagnostics") or {}).items()
               if r.get("status") == "ok" and f"arrays/{n}/{_MAP}" in (r.get("artifacts") or [])]
    rules: list[Callable[[], list[dict[str, Any]]]] = [
        lambda: _quality(summary), lambda: _sanity(summary, methods), lambda: _faithfulness(summary),
        lambda: _evidence(summary, folder), lambda: _spectral(summary), lambda: _failures(summary),
        lambda: _health(summary), lambda: _run(summary)]
    out: list[dict[str, Any]] = []
    for rule in rules:
        try:
            out += rule()
        except Exception as err:  # noqa: BLE001 - a rule that trips on an odd summary costs one line, not the report
            out.append(_f("findings_error", "warning", f"a findings rule failed: {type(err).__name__}: {err}", None))
    return out


def findings_of(summary: dict[str, Any], root: str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`compute_findings` for the writers: never raises (a failure is one warning finding)."""
    try:
        return compute_findings(summary, root)
    except Exception as err:  # noqa: BLE001 - findings are a view; they never cost the report
        return [_f("findings_error", "warning", f"findings could not be computed: {type(err).__name__}: {err}", None)]
