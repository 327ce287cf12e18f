"""What no list of findings may do: state one relation both ways. Shared by the findings tests (synthesised
summaries) and the real autopsy of ``tests/test_findings.py``."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

__all__ = ["contradictions"]

_VERDICT = re.compile(r"\b(partly agree|agree|disagree)\b")


def _trust_sides(findings: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    read, dont = set(), set()
    for f in findings:
        ev = f["evidence"]
        if f["kind"] == "faithfulness":
            read |= {ev["recommended"]} if ev.get("recommended") else set()
            read |= set(ev.get("care") or [])
            dont |= set(ev.get("do_not_read") or [])
        elif f["kind"] == "sanity" and f["severity"] == "problem":
            dont.add(ev["method"])
        elif f["kind"] == "sanity" and ev.get("methods"):
            read |= set(ev["methods"]) - set(ev.get("ruled_out") or [])
            dont |= set(ev.get("ruled_out") or [])
        elif f["kind"] == "evidence" and ev.get("trusted") is False:
            dont.add(f["diagnostic"])
    return read, dont


def contradictions(findings: list[dict[str, Any]]) -> list[str]:
    """Every relation ``findings`` state both ways, in words (empty when they are consistent)."""
    out = []
    # agreement: one verdict per pair of methods, and no other finding naming the pair with another verdict
    said: dict[frozenset, set[str]] = {}
    for f in findings:
        methods = f["evidence"].get("methods") if f["kind"] == "agreement" else None
        pairs = [frozenset(methods)] if methods else [
            frozenset(p) for p in combinations(sorted({m for f2 in findings for m in f2["evidence"].get(
                "methods") or []}), 2) if all(m in f["text"] for m in p)]
        for p in pairs:
            said.setdefault(p, set()).update(_VERDICT.findall(f["text"].split(":", 1)[0]))
    out += [f"{' and '.join(sorted(p))} said to {' and '.join(sorted(v))}" for p, v in said.items() if len(v) > 1]
    # trust: no method both recommended for reading and ruled out
    read, dont = _trust_sides(findings)
    out += [f"{m} both to read and not to read" for m in sorted(read & dont)]
    for f in findings:
        out += [f"{m} recommended in {f['text']!r} but ruled out" for m in dont if f"Read {m}'s maps" in f["text"]]
    # health: "healthy" / "no dead or saturated layers" next to a health flag
    health = [f for f in findings if f["kind"] == "health"]
    flagged = [f for f in health if f["severity"] != "info"]
    if flagged and any(f["text"].startswith("Healthy") for f in health):
        out.append("healthy and flagged")
    for claim, flag in (("no dead or saturated layers", ("dead layer", "saturated layer")),
                        ("no vanishing, exploding or non-finite gradients", ("vanishing", "exploding",
                                                                             "non-finite gradients"))):
        if any(claim in f["text"] for f in health) and any(any(w in f["text"] for w in flag) for f in flagged):
            out.append(f"{claim!r} next to a flag")
    # model quality: one finding; never "beats" a baseline and "below"/"no better than" it or constant
    quality = [f for f in findings if f["kind"] == "model_quality"]
    if len(quality) > 1:
        out.append(f"{len(quality)} model-quality findings")
    beats = any(re.search(r"\bbeats\b", f["text"]) for f in quality)
    worse = [f["text"] for f in findings if re.search(r"below the majority-class baseline|no better than", f["text"])]
    if beats and worse:
        out.append(f"beats the baseline and {worse}")
    if beats and any("constant predictions" in f["text"] for f in findings):
        out.append("beats the baseline with constant predictions")
    return out
