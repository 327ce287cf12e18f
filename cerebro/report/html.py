"""``report.html``: one self-contained page (figures embedded, no external resource, opens offline anywhere).

Run header, an at-a-glance status table, sanity-check verdicts, the worst-case gallery, then one section per
diagnostic with its metrics, flags and captioned figures. Every string that comes from the user or the data
(names, paths, metadata, reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import PurePosixPath
from typing import Any

from cerebro.report.captions import caption
from cerebro.report.writer import ReportWriter

__all__ = ["write_html", "render_html"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top;font-size:.9em}th{background:#f3f3f3}.ok,.pass{color:#176f2c}.failed,.fail{color:#b00020}
.skipped,.partial,.na{color:#a15c00}figure{margin:.8em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.8em}.flags li{color:#b00020}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.gallery figure{max-width:360px}"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    if isinstance(value, (int, str, bool)) or value is None:
        return escape(str(value))
    text = json.dumps(value, indent=1, default=str)
    if len(text) > 4000:
        text = text[:4000] + "\n..."
    return f"<pre>{escape(text)}</pre>"


def _table(rows: list[tuple[str, Any]], raw: bool = False) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v if raw else _cell(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>" if body else ""


def _img(writer: ReportWriter, rel: str) -> str:
    data = base64.b64encode((writer.root / rel).read_bytes()).decode()
    stem = PurePosixPath(rel).stem
    text = caption(stem)
    return (f"<figure><img alt='{escape(stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{escape(stem)}</b>{': ' + escape(text) if text else ''}</figcaption></figure>")


def _header(s: dict[str, Any]) -> str:
    ck, sm = s.get("checkpoint") or {}, s.get("samples") or {}
    rows = [("created", s.get("created")), ("checkpoint", ck.get("path") or ck.get("source")),
            ("checkpoint source", ck.get("source")), ("checkpoint sha256", ck.get("sha256"))]
    if ck.get("fallback_reason"):
        rows.append(("why not the requested checkpoint", ck["fallback_reason"]))
    rows += [("samples", f"{s.get('n_samples')} from {sm.get('source')} ({sm.get('sampling')}), input shape "
                         f"{sm.get('input_shape')}, labels: {sm.get('has_labels')}"),
             ("target", s.get("target")), ("device", f"{s.get('device')} x {s.get('world_size', 1)} process(es)"),
             ("duration", f"{s.get('seconds', 0):.1f} s"), ("versions", s.get("versions"))]
    reason = f"<p class='failed'>{escape(str(s['reason']))}</p>" if s.get("reason") else ""
    reason += "".join(f"<p class='partial'>warning: {escape(str(w))}</p>" for w in s.get("warnings") or [])
    return (f"<h1>cerebro autopsy: <span class='{escape(s['status'])}'>{escape(s['status'])}</span></h1>{reason}"
            + _table(rows))


def _verdict(word: Any, detail: Any = None) -> str:
    """A table cell for one sanity check: pass / fail / not applicable, with its number."""
    cls = "pass" if word == "pass" else "fail" if word == "fail" else "na"
    extra = f" ({detail:.2f})" if isinstance(detail, float) else ""
    return f"<td class='{cls}'>{escape(str(word or 'n/a'))}{escape(extra)}</td>"


def _sanity(s: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The verdict table, and per method a one-word verdict for the status table."""
    rec = s["diagnostics"].get("sanity_checks")
    methods = ((rec or {}).get("metrics") or {}).get("methods") or {}
    if not methods:
        return "", {}
    rows, verdicts = [], {}
    for name, m in methods.items():
        if "error" in m:
            rows.append(f"<tr><td>{escape(name)}</td><td colspan='4' class='fail'>{escape(m['error'])}</td></tr>")
            verdicts[name] = "fail"
            continue
        checks = [m.get("model_randomization"), m.get("target_randomization"), m.get("completeness")]
        failed = any(c == "fail" for c in checks) or m.get("degenerate")
        verdicts[name] = "fail" if failed else "pass"

        rows.append(f"<tr><td>{escape(name)}</td>{_verdict(m.get('model_randomization'), m.get('final_spearman'))}"
                    f"{_verdict(m.get('target_randomization'), m.get('target_randomization_spearman'))}"
                    f"{_verdict(m.get('completeness'), m.get('completeness_median_relative_error'))}"
                    f"{_verdict('fail' if m.get('degenerate') else 'pass')}</tr>")
    head = ("<h2 id='sanity'>Sanity checks</h2><p>Does each method explain the model? Maps must change when the "
            "weights are randomized (Spearman after the last layer below the threshold) and when another class is "
            "explained; IG attributions must sum to f(x) - f(baseline); no map may be constant, zero or NaN.</p>"
            "<table><tr><th>method</th><th>model randomization (final Spearman)</th><th>target randomization"
            "</th><th>completeness (median rel. error)</th><th>non-degenerate</th></tr>")
    return head + "".join(rows) + "</table>", verdicts


def _gallery(writer: ReportWriter, s: dict[str, Any]) -> str:
    items = s.get("gallery") or []
    if not items:
        return ""
    parts = ["<h2 id='gallery'>Worst cases</h2><p>The samples with the largest error, each with every attribution "
             "method's map.</p>"]
    for it in items:
        facts = {k: v for k, v in it.items() if k not in ("figures", "rank")}
        parts.append(f"<h3>#{it['rank'] + 1}: sample {escape(str(it['index']))}</h3>" + _table(list(facts.items()))
                     + "<div class='gallery'>" + "".join(_img(writer, f) for f in it["figures"]) + "</div>")
    return "".join(parts)


def _drift(writer: ReportWriter, s: dict[str, Any]) -> str:
    d = s.get("drift")
    if not d:
        return ""
    if "error" in d:
        return f"<h2 id='drift'>Over training</h2><p class='failed'>{escape(d['error'])}</p>"
    rows = [("epochs", d["epochs"]), ("dead-unit fraction per epoch", d["dead_unit_fraction"])]
    rows += [(f"{n}: Spearman with the previous autopsy", v) for n, v in d["attributions"].items()]
    return ("<h2 id='drift'>Over training</h2><p>Periodic autopsies of the live module during training: how much "
            "each method's mean map changed between consecutive autopsies, and the dead units.</p>" + _table(rows)
            + "".join(_img(writer, a) for a in d.get("artifacts", []) if a.endswith(".png")))


def render_html(writer: ReportWriter, summary: dict[str, Any]) -> str:
    s = summary
    sanity, verdicts = _sanity(s)
    status_rows = "".join(
        f"<tr><td><a href='#d-{escape(n)}'>{escape(n)}</a></td><td class='{escape(r['status'])}'>"
        f"{escape(r['status'])}</td><td>{r['seconds']:.2f} s</td>"
        f"<td class='{verdicts.get(n, 'na')}'>{escape(verdicts.get(n, ''))}</td><td>{escape(r['reason'] or '')}</td>"
        f"<td>{'<br>'.join(escape(f) for f in r['flags'])}</td></tr>"
        for n, r in s["diagnostics"].items())
    glance = ("<h2>At a glance</h2><table><tr><th>diagnostic</th><th>status</th><th>time</th><th>sanity</th>"
              f"<th>reason</th><th>flags</th></tr>{status_rows}</table>")
    sections = []
    for name, r in s["diagnostics"].items():
        flags = ("<ul class='flags'>" + "".join(f"<li>{escape(f)}</li>" for f in r["flags"]) + "</ul>"
                 if r["flags"] else "")
        figures = "".join(_img(writer, a) for a in r["artifacts"] if a.endswith(".png"))
        files = ", ".join(escape(a) for a in r["artifacts"] if not a.endswith(".png"))
        reason = f"<p class='{escape(r['status'])}'>{escape(r['reason'])}</p>" if r.get("reason") else ""
        sections.append(f"<h2 id='d-{escape(name)}'>{escape(name)} <small class='{escape(r['status'])}'>"
                        f"{escape(r['status'])}</small></h2>{reason}{flags}"
                        + _table(list(r["metrics"].items())) + figures
                        + (f"<p>arrays (numpy): {files}</p>" if files else ""))
    config = f"<details><summary>configuration</summary><pre>{escape(json.dumps(s['config'], indent=1))}</pre></details>"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cerebro autopsy</title>"
            f"<style>{_CSS}</style></head><body>{_header(s)}{config}{glance}{sanity}{_gallery(writer, s)}{_drift(writer, s)}"
            f"{''.join(sections)}</body></html>")


def write_html(writer: ReportWriter, summary: dict[str, Any]) -> None:
    """Render ``summary`` and the figures it lists into ``report.html``."""
    writer.write_text("report.html", render_html(writer, summary))
