"""``report.html``: one self-contained page with the status of every diagnostic, its metrics, flags and figures."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from cerebro.report.writer import ReportWriter

__all__ = ["write_html"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;font-size:.9em}
.ok{color:#176f2c}.failed{color:#b00020}.skipped,.partial{color:#a15c00}img{max-width:100%;margin:.5em 0}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.8em}"""


def _scalar_rows(metrics: dict[str, Any]) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            rows.append(f"<tr><td>{escape(key)}</td><td>{escape(shown)}</td></tr>")
        else:
            text = json.dumps(value, indent=1)
            if len(text) > 4000:
                text = text[:4000] + "\n..."
            rows.append(f"<tr><td>{escape(key)}</td><td><pre>{escape(text)}</pre></td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


def write_html(writer: ReportWriter, summary: dict[str, Any]) -> None:
    """Render ``summary`` and the figures it lists into ``report.html`` (figures embedded as base64 PNG)."""
    s = summary
    head = (f"<h1>cerebro autopsy: <span class='{escape(s['status'])}'>{escape(s['status'])}</span></h1>"
            + (f"<p class='failed'>{escape(str(s['reason']))}</p>" if s.get("reason") else "")
            + "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(json.dumps(s.get(k)))}</td></tr>"
                                  for k in ("created", "checkpoint", "device", "n_samples", "samples", "target",
                                            "versions"))
            + "</table>")
    status_rows = "".join(
        f"<tr><td><a href='#{escape(n)}'>{escape(n)}</a></td><td class='{escape(r['status'])}'>{escape(r['status'])}"
        f"</td><td>{r['seconds']:.2f}s</td><td>{escape(r['reason'] or '')}</td>"
        f"<td>{'<br>'.join(escape(f) for f in r['flags'])}</td></tr>"
        for n, r in s["diagnostics"].items())
    sections = []
    for name, r in s["diagnostics"].items():
        imgs = []
        for art in r["artifacts"]:
            if art.endswith(".png"):
                data = base64.b64encode((writer.root / art).read_bytes()).decode()
                imgs.append(f"<figure><img alt='{escape(art)}' src='data:image/png;base64,{data}'>"
                            f"<figcaption>{escape(art)}</figcaption></figure>")
        files = ", ".join(escape(a) for a in r["artifacts"] if not a.endswith(".png"))
        sections.append(f"<h2 id='{escape(name)}'>{escape(name)} <small class='{escape(r['status'])}'>"
                        f"{escape(r['status'])}</small></h2>" + _scalar_rows(r["metrics"]) + "".join(imgs)
                        + (f"<p>files: {files}</p>" if files else ""))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>cerebro autopsy</title><style>{_CSS}</style>"
            f"</head><body>{head}<h2>Diagnostics</h2><table><tr><th>diagnostic</th><th>status</th><th>time</th>"
            f"<th>reason</th><th>flags</th></tr>{status_rows}</table>{''.join(sections)}"
            f"<h2>Configuration</h2><pre>{escape(json.dumps(s['config'], indent=1))}</pre></body></html>")
    writer.write_text("report.html", page)
