"""Findings: what an autopsy says, in plain words, computed from its results (``summary.json`` and the mean maps).

Each finding is ``{kind, severity: info | warning | problem, text, diagnostic, evidence}``; ``evidence`` holds the
numbers the text is made of and ``anchor``, the id of the report section that shows them. They are stored as the
summary's top-level ``findings`` and read by the report (first thing on the page), the loggers and ``compare``.

Rules, in reading order, one module per topic: model quality against the naive baselines (:mod:`.quality`); which
methods may be read, from the sanity checks and the faithfulness verdicts (:mod:`.trust`); where the evidence is
and the frequency bands of spectral IG (:mod:`.where`); whether methods agree (:mod:`.agreement`); which samples
and groups fail (:mod:`.failures`); health, failed diagnostics and warnings (:mod:`.health`). A rule whose
diagnostic is absent, failed or shaped differently adds nothing.

Each topic is judged once, from the same evidence, by one function (the majority-class baseline, the trust of a
method, the agreement of a pair of methods, the health of what was checked), so no two findings state a relation
both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cerebro.report.findings.agreement import agreement_findings, summary_gallery
from cerebro.report.findings.common import MAP, SEVERITIES, finding, finding_key, fmt, metrics_of, strip_numbers
from cerebro.report.findings.failures import failure_findings
from cerebro.report.findings.health import display_status, health_findings, run_findings
from cerebro.report.findings.quality import quality_findings
from cerebro.report.findings.trust import (faithfulness_findings, method_trust, sanity_findings, sanity_verdicts,
                                           untrusted_methods)
from cerebro.report.findings.where import Located, evidence_findings, locate, spectral_findings

__all__ = ["SEVERITIES", "compute_findings", "findings_of", "finding_key", "strip_numbers", "sanity_verdicts",
           "untrusted_methods", "method_trust", "display_status", "fmt", "summary_gallery"]


def compute_findings(summary: dict[str, Any], root: str | Path | None = None) -> list[dict[str, Any]]:
    """The findings of an autopsy ``summary``; ``root`` (its output folder) lets the rules read the mean maps."""
    folder = Path(root) if root is not None else None
    methods = [n for n, r in (summary.get("diagnostics") or {}).items()
               if r.get("status") == "ok" and f"arrays/{n}/{MAP}" in (r.get("artifacts") or [])]
    cache: dict[str, Located] = {}

    def located() -> Located:  # read the maps once for both rules that need them
        if "maps" not in cache:
            cache["maps"] = locate(summary, folder)
        return cache["maps"]

    untrusted = untrusted_methods(summary)
    gallery = summary_gallery(metrics_of(summary, "failure_modes"), summary)
    rules: list[Callable[[], list[dict[str, Any]]]] = [
        lambda: quality_findings(summary), lambda: sanity_findings(summary, methods),
        lambda: faithfulness_findings(summary), lambda: evidence_findings(located(), untrusted),
        lambda: agreement_findings(located(), gallery, untrusted), lambda: spectral_findings(summary),
        lambda: failure_findings(summary), lambda: health_findings(summary), lambda: run_findings(summary)]
    out: list[dict[str, Any]] = []
    for rule in rules:
        try:
            out += rule()
        except Exception as err:  # noqa: BLE001 - a rule that trips on an odd summary costs one line, not the report
            out.append(finding("findings_error", "warning", f"a findings rule failed: {type(err).__name__}: {err}",
                               None))
    return out


def findings_of(summary: dict[str, Any], root: str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`compute_findings` for the writers: never raises (a failure is one warning finding)."""
    try:
        return compute_findings(summary, root)
    except Exception as err:  # noqa: BLE001 - findings are a view; they never cost the report
        return [finding("findings_error", "warning", f"findings could not be computed: {type(err).__name__}: {err}",
                        None)]
