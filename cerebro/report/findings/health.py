"""Health (gradients, activations) and the run itself (failed diagnostics, other flags, warnings), and the status
line that sums them up.

A health claim names only what was checked: "no dead or saturated layers" only when ``activations`` ran clean,
"no vanishing, exploding or non-finite gradients" only when ``gradients`` did; one that raised a flag is never
called healthy, and one that did not run is said to be unchecked.
"""

from __future__ import annotations

from typing import Any

from cerebro.report.findings.common import finding, metrics_of, ok_record
from cerebro.report.findings.quality import QUALITY_FLAGS

__all__ = ["OWN_FLAGS", "health_findings", "run_findings", "display_status"]

#: Health and trust diagnostics whose flags the rules turn into findings themselves.
OWN_FLAGS = {"gradients", "activations", "sanity_checks", "faithfulness", "spectral_integrated_gradients"}
_CLAIMS = {"activations": "no dead or saturated layers", "gradients": "no vanishing, exploding or non-finite gradients"}


def _checked(s: dict[str, Any], name: str) -> str:
    if name == "activations":
        layers = metrics_of(s, name).get("layers")
        return f"{layers} layers checked" if layers else "checked"
    per = metrics_of(s, name).get("per_parameter")
    return f"{len(per)} parameter tensors checked" if isinstance(per, dict) else "checked"


def health_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """A finding per health flag (a problem for non-finite or exploding values); "healthy" for the checks that ran
    clean, naming what was checked and what was not."""
    out, clean = [], []
    for name in ("activations", "gradients"):
        rec = ok_record(s, name)
        if rec is None:
            continue
        flags = rec.get("flags") or []
        for flag in flags:
            sev = "problem" if "non-finite" in flag or "exploding" in flag else "warning"
            out.append(finding("health", sev, f"{name}: {flag}.", name, f"d-{name}", flag=flag))
        if not flags:
            clean.append(name)
    if clean:
        said = "; ".join(f"{_CLAIMS[n]} ({_checked(s, n)})" for n in clean)
        if out:  # the other check raised flags: the clean one is reported as such, never the model as healthy
            text = f"{' and '.join(clean)}: {said}."
        else:
            unchecked = [n for n in _CLAIMS if n not in clean]
            text = f"Healthy: {said}" + (f"; {' and '.join(unchecked)} not checked" if unchecked else "") + "."
        out.append(finding("health", "info", text, clean[0], f"d-{clean[0]}", checked=clean))
    return out


def run_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Failed diagnostics, the flags no other rule states, and the run's warnings."""
    out = []
    for n, rec in (s.get("diagnostics") or {}).items():
        if rec.get("status") == "failed":
            out.append(finding("diagnostic_failed", "problem", f"{n} failed: {rec.get('reason')}", n, f"d-{n}"))
        elif rec.get("status") == "ok" and n not in OWN_FLAGS:
            for flag in rec.get("flags") or []:
                if not (n == "predictions" and str(flag).startswith(QUALITY_FLAGS)):
                    out.append(finding("flag", "warning", f"{n}: {flag}.", n, f"d-{n}", flag=flag))
    for w in s.get("warnings") or []:
        out.append(finding("run_warning", "warning", f"{w}.", None))
    return out


def display_status(summary: dict[str, Any]) -> str:
    """The status line of the report: ``ok, with warnings`` when the run is ok but a finding is a warning or a
    problem (a method failed its sanity checks, a group fails, a layer is dead ...)."""
    status = str(summary.get("status"))
    findings = summary.get("findings") or []
    if status == "ok" and any(f.get("severity") in ("warning", "problem") for f in findings if isinstance(f, dict)):
        return "ok, with warnings"
    return status
