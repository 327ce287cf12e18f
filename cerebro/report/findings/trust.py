"""Which maps may be read: the sanity checks (Adebayo et al. 2018) and the faithfulness verdicts, judged once.

One trust judgement per method (:func:`method_trust`): ``do_not_read`` when it failed a sanity check or faithfulness
says ``do_not_read``, ``care`` when faithfulness says ``care``, else ``read``. Every rule that tells the reader
whether to read a map (sanity, faithfulness, where the evidence is, agreement) reads this judgement, so no finding
recommends a map another one rules out.
"""

from __future__ import annotations

from typing import Any

from cerebro.report.findings.common import finding, fmt, metrics_of, num

__all__ = ["sanity_verdicts", "untrusted_methods", "method_trust", "sanity_findings", "faithfulness_findings"]


def sanity_verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {"verdict": "pass" | "fail", "why": [failed checks]}}`` from ``sanity_checks`` (empty when it did
    not run)."""
    methods = metrics_of(summary, "sanity_checks").get("methods") or {}
    out = {}
    for name, m in methods.items() if isinstance(methods, dict) else ():
        if not isinstance(m, dict):
            continue
        why = []
        if "error" in m:
            why.append(f"could not run: {m['error']}")
        if m.get("model_randomization") == "fail":
            rho = num(m.get("final_spearman"))
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


def _faithfulness_methods(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    methods = metrics_of(summary, "faithfulness").get("methods") or {}
    return {n: r for n, r in methods.items() if isinstance(r, dict)} if isinstance(methods, dict) else {}


def method_trust(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{method: {"verdict": "read" | "care" | "do_not_read", "why": ...}}`` for every method the sanity checks or
    the faithfulness diagnostic judged: the one trust judgement the findings and the report read."""
    out: dict[str, dict[str, str]] = {}
    for n, v in sanity_verdicts(summary).items():
        out[n] = ({"verdict": "do_not_read", "why": "failed sanity checks: " + "; ".join(v["why"])}
                  if v["verdict"] == "fail" else {"verdict": "read", "why": "passed the sanity checks"})
    for n, rec in _faithfulness_methods(summary).items():
        if out.get(n, {}).get("verdict") == "do_not_read":
            continue
        if rec.get("verdict") == "do_not_read":
            out[n] = {"verdict": "do_not_read", "why": "faithfulness: do not read "
                      f"({rec.get('verdict_reason') or 'no more faithful than random'})"}
        elif rec.get("verdict") == "care":
            out[n] = {"verdict": "care", "why": f"faithfulness: read with care ({rec.get('verdict_reason') or ''})"}
        else:
            out.setdefault(n, {"verdict": "read", "why": "faithfulness: trust"})
    return out


def untrusted_methods(summary: dict[str, Any]) -> dict[str, str]:
    """``{method: why}`` for every method whose maps should not be read: failed sanity checks, or a faithfulness
    verdict ``do_not_read``. The report marks these wherever their maps appear."""
    return {n: t["why"] for n, t in method_trust(summary).items() if t["verdict"] == "do_not_read"}


def sanity_findings(s: dict[str, Any], methods: list[str]) -> list[dict[str, Any]]:
    """A problem per method that failed the sanity checks; one line for those that passed (and a warning when the
    checks did not run or failed)."""
    rec = (s.get("diagnostics") or {}).get("sanity_checks")
    if rec is None:
        if methods:
            return [finding("sanity", "warning", "Sanity checks were not run, so nothing says whether the maps of "
                            f"{', '.join(methods)} depend on the model: add sanity_checks to the diagnostics.", None)]
        return []
    if rec.get("status") != "ok":
        return [finding("sanity", "warning", f"Sanity checks {rec.get('status')}: {rec.get('reason') or 'no reason'}"
                        "; the maps are unchecked.", "sanity_checks", "sanity")]
    verdicts = sanity_verdicts(s)
    out = [finding("sanity", "problem", f"{n} failed the sanity checks ({'; '.join(v['why'])}): do not read its "
                   "maps.", "sanity_checks", "sanity", method=n, checks=v["why"])
           for n, v in verdicts.items() if v["verdict"] == "fail"]
    passed = [n for n, v in verdicts.items() if v["verdict"] == "pass"]
    if passed:
        untrusted = untrusted_methods(s)
        ruled_out = [n for n in passed if n in untrusted]
        text = f"{', '.join(passed)} passed the sanity checks (maps change when the weights are randomized)"
        if ruled_out:  # passing the sanity checks is not enough: the trust judgement has the last word
            readable = [n for n in passed if n not in untrusted]
            text += (f", but faithfulness rules out {', '.join(ruled_out)}: read "
                     f"{', '.join(readable) + ' only' if readable else 'none of them'}.")
        else:
            text += ": read these maps."
        out.append(finding("sanity", "info", text, "sanity_checks", "sanity", methods=passed,
                           ruled_out=ruled_out or None))
    return out


def faithfulness_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Which map to read, by faithfulness score, among the methods the trust judgement lets be read."""
    m = metrics_of(s, "faithfulness")
    methods = _faithfulness_methods(s)
    if not methods:
        return []
    trust = method_trust(s)
    scores = {n: num(r.get("score")) for n, r in methods.items()}
    bad = [n for n in methods if trust[n]["verdict"] == "do_not_read"]
    care = [n for n in methods if trust[n]["verdict"] == "care"]
    best, passed_over = m.get("recommended"), None
    if best is not None and trust.get(best, {}).get("verdict") == "do_not_read":
        # e.g. faithfulness reads a target-randomization failure as "care", the sanity rule as "do not read"
        passed_over = best
        ranked = sorted((n for n in methods if n not in bad and scores[n] is not None), key=lambda n: -scores[n])
        best = next((n for v in ("read", "care") for n in ranked if trust[n]["verdict"] == v), None)
    if best:
        text = f"Read {best}'s maps (faithfulness score {fmt(scores.get(best))}, the most faithful of this run"
        text += f" that may be read: {passed_over} scores higher but failed the sanity checks)" if passed_over else ")"
    else:
        text = ("No map of this run is more faithful than random order" if passed_over is None else
                f"No map of this run that passed the sanity checks is more faithful than random order ({passed_over} "
                "scores highest but failed them)") + ": read none of them"
    if bad:
        text += f"; do not read {', '.join(bad)}"
    if care:
        text += f"; read {', '.join(care)} with care"
    return [finding("faithfulness", "problem" if not best else "warning" if bad else "info", text + ".",
                    "faithfulness", "d-faithfulness", recommended=best, do_not_read=bad, care=care, scores=scores,
                    passed_over=passed_over)]
