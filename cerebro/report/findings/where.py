"""Where the evidence is: each method's mean map located on channels, time, image regions or positions, and the
frequency bands of spectral IG (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from cerebro.report.evidence import map_evidence
from cerebro.report.findings.common import MAP, finding, fmt, metrics_of, num, ok_record, pct

__all__ = ["Located", "locate", "span", "evidence_findings", "spectral_findings"]

#: ``(maps, found)``: each method's mean map and what :func:`cerebro.report.evidence.map_evidence` found in it.
Located = tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]


def locate(s: dict[str, Any], root: Optional[Path]) -> Located:
    """The mean maps of ``s`` (read from ``root``) and where each puts its evidence; empty without ``root``."""
    maps = {}
    for n, rec in (s.get("diagnostics") or {}).items():
        if rec.get("status") == "ok" and f"arrays/{n}/{MAP}" in (rec.get("artifacts") or []) and root is not None:
            try:
                maps[n] = np.load(root / "arrays" / n / MAP)
            except (OSError, ValueError):
                continue
    shape = (s.get("samples") or {}).get("input_shape") or []
    eeg = s.get("eeg") if isinstance(s.get("eeg"), dict) and "error" not in s.get("eeg", {}) else {}
    found = {n: map_evidence(m, shape, eeg.get("sfreq"), eeg.get("channel_names")) for n, m in maps.items()}
    return maps, found


def span(w: dict[str, Any]) -> str:
    """A time window as ``0.80-1.20 s`` (or in samples when the sampling rate is unknown)."""
    return f"{w['start_s']:.2f}-{w['stop_s']:.2f} s" if "start_s" in w else f"samples {w['start']}-{w['stop']}"


def _window_text(w: dict[str, Any]) -> str:
    if "start_s" in w:
        return f"between {w['start_s']:.2f} and {w['stop_s']:.2f} s (peak {w['peak_s']:.2f} s)"
    return f"between samples {w['start']} and {w['stop']} (peak at sample {w['peak']})"


def evidence_findings(located: Located, untrusted: dict[str, str]) -> list[dict[str, Any]]:
    """One finding per method whose mean map puts its evidence somewhere nameable (a warning when its maps should
    not be read)."""
    out = []
    for n, e in located[1].items():
        parts = []
        if e.get("channels"):
            parts.append(f"on channel{'s' if len(e['channels']) > 1 else ''} {', '.join(e['channels'])} "
                         f"({pct(e['channel_share'])} of the map on {pct(e['channel_area'])} of the channels)")
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
                         f"({pct(r['share'])} of the map on {pct(r['area'])} of the image)")
        if e.get("feature_indices"):
            parts.append(f"on positions {', '.join(map(str, e['feature_indices']))} ({pct(e['feature_share'])} "
                         "of the map)")
        if not parts:
            continue
        sev, tail = "info", ""
        if n in untrusted:
            sev, tail = "warning", f" But do not read it: {untrusted[n]}."
        out.append(finding("evidence", sev, f"{n}: the evidence is {' '.join(parts)}.{tail}", n, f"d-{n}",
                           channels=e.get("channels"), channel_indices=e.get("channel_indices"), window=w,
                           region=e.get("region"), features=e.get("feature_indices"), trusted=n not in untrusted))
    return out


def spectral_findings(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The dominant frequency band of spectral IG and its possible confounds."""
    name = "spectral_integrated_gradients"
    rec, m = ok_record(s, name), metrics_of(s, name)
    if rec is None:
        return []
    out = []
    band = m.get("dominant_band")
    shares = m.get("band_share") if isinstance(m.get("band_share"), dict) else {}
    if band:
        edges = (m.get("band_edges_hz") or {}).get(band) if isinstance(m.get("band_edges_hz"), dict) else None
        rng = f" ({fmt(edges[0])}-{fmt(edges[1])} Hz)" if isinstance(edges, list) and len(edges) == 2 else ""
        share = num(shares.get(band)) if isinstance(band, str) else None
        peak = num(m.get("peak_frequency_hz"))
        chans = m.get("dominant_channel_names") or m.get("dominant_channels") or []
        text = (f"Frequency: most evidence is in the {band} band{rng}"
                + (f", {pct(share)} of |attribution|" if share is not None else "")
                + (f", peak at {fmt(peak)} Hz" if peak is not None else "")
                + (f", on channels {', '.join(map(str, chans[:5]))}" if chans else "") + ".")
        out.append(finding("spectral", "info", text, name, f"d-{name}", band=band, band_share=share, peak_hz=peak,
                           channels=chans[:5] or None))
    for flag in rec.get("flags") or []:
        if "confound" in str(flag).lower():
            out.append(finding("spectral_confound", "warning", f"Possible confound: {flag}.", name, f"d-{name}",
                               flag=flag))
    return out
