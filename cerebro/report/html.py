"""``report.html``: one page that opens offline (figures embedded, no external resource); its only scripts are the
sample explorer's, loaded from the ``explorer/`` folder beside it (:mod:`cerebro.report.explorer_html`).

Read top-down in two minutes: the status line and the findings (plain words, each linked to its evidence), the
status of each diagnostic, the sanity-check verdicts, the worst-case gallery (every method's map over each worst
sample), drift over training, then one section per diagnostic with its flags, its metrics as tables and its
captioned figures; run and engine details sit in one collapsed section at the end. A method whose maps should not
be read (failed sanity checks, faithfulness ``do_not_read``) is marked wherever its maps appear. The layout uses
the screen's width and prints. Every string that comes from the user or the data is HTML-escaped.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import PurePosixPath
from typing import Any

from cerebro.report.captions import caption
from cerebro.report.explorer_html import explorer_section
from cerebro.report.findings import SEVERITIES, compute_findings, display_status, fmt, sanity_verdicts, \
    untrusted_methods
from cerebro.report.tables import kv_table, metric_tables, split_metrics, value_text
from cerebro.report.writer import ReportWriter

__all__ = ["write_html", "render_html"]

_CSS = """*{box-sizing:border-box}body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;
line-height:1.45;padding:1.2em clamp(.8em,2.5vw,2.5em)}main{max-width:1900px;margin:0 auto}
h1{font-size:1.6em;margin:.2em 0}h2{margin:1.6em 0 .4em;padding-top:.4em;border-top:1px solid #ddd}
h3{margin:1.1em 0 .3em}.sub{color:#555;margin:.2em 0 1em;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.3em 0;font-size:.88em}caption{text-align:left;font-weight:600;padding:.2em 0}
td,th{border:1px solid #d4d4d4;padding:.2em .55em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.wrap{max-width:100%;overflow-x:auto}.tables{display:flex;flex-wrap:wrap;gap:.4em 2em;align-items:flex-start}
.ok,.pass{color:#176f2c}.failed,.fail,.problem{color:#b00020}.skipped,.partial,.na,.warning{color:#9a5800}
.status-ok{color:#176f2c}.status-warn{color:#9a5800}.status-bad{color:#b00020}
ul.findings{list-style:none;padding:0;margin:.4em 0;display:grid;gap:.35em}
ul.findings li{padding:.45em .7em;border-left:5px solid #8fa3bf;background:#f6f8fb;overflow-wrap:anywhere}
ul.findings li.sev-warning{border-color:#e0a100;background:#fff9e8}
ul.findings li.sev-problem{border-color:#c62828;background:#fdeeee}
.sev{font-size:.75em;font-weight:700;text-transform:uppercase;margin-right:.5em;letter-spacing:.03em}
.badge{display:inline-block;font-size:.75em;padding:.1em .5em;border-radius:.8em;background:#fdeeee;color:#b00020;
margin-left:.5em;vertical-align:middle}.distrust{border-left:5px solid #c62828;padding:.3em .7em;background:#fdeeee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,460px),1fr));gap:1em;align-items:start}
figure{margin:0}img{max-width:100%;height:auto;display:block}figcaption{font-size:.85em;color:#444;margin-top:.2em}
.gallery-item{margin:1em 0 1.6em}.gallery-item img{width:min(100%,1150px)}.flags li{color:#b00020}
details{margin:.4em 0}summary{cursor:pointer;color:#2b59c3}a{color:#2b59c3}
@media print{body{padding:0;font-size:10pt}h2{break-after:avoid}figure,table,li{break-inside:avoid}
.grid{grid-template-columns:repeat(2,1fr)}a{color:inherit;text-decoration:none}}"""


def _img(writer: ReportWriter, rel: str, warn: str = "") -> str:
    data = base64.b64encode((writer.root / rel).read_bytes()).decode()
    stem = PurePosixPath(rel).stem
    text = caption(stem)
    mark = f"<b class='fail'>{escape(warn)}</b> " if warn else ""
    return (f"<figure><img alt='{escape(stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{mark}<b>{escape(stem)}</b>{': ' + escape(text) if text else ''}</figcaption></figure>")


def _status_class(word: str) -> str:
    return "status-ok" if word == "ok" else "status-warn" if word in ("ok, with warnings", "partial") else "status-bad"


def _header(s: dict[str, Any]) -> str:
    ck, sm = s.get("checkpoint") or {}, s.get("samples") or {}
    word = display_status(s)
    target = s.get("target") or {}
    kind = target.get("kind") if isinstance(target, dict) else target
    sub = (f"{s.get('n_samples')} samples from the {sm.get('source')}, input {sm.get('input_shape')}, target "
           f"{kind}; checkpoint {ck.get('path') or ck.get('source')}; {s.get('created')}; "
           f"{s.get('seconds', 0):.1f} s on {s.get('device')}")
    reason = f"<p class='failed'>{escape(str(s['reason']))}</p>" if s.get("reason") else ""
    if ck.get("fallback_reason"):
        reason += f"<p class='partial'>checkpoint: {escape(str(ck['fallback_reason']))}</p>"
    return (f"<h1>cerebro autopsy: <span class='{_status_class(word)}'>{escape(word)}</span></h1>"
            f"<p class='sub'>{escape(sub)}</p>{reason}")


def _findings(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<h2 id='findings'>Findings</h2><p>No findings: no diagnostic produced results to read.</p>"
    items = []
    for f in findings:
        sev = f.get("severity") if f.get("severity") in SEVERITIES else "info"
        anchor = (f.get("evidence") or {}).get("anchor")
        link = f" <a href='#{escape(str(anchor))}'>evidence</a>" if anchor else ""
        items.append(f"<li class='sev-{sev}'><span class='sev {sev}'>{sev}</span>{escape(str(f.get('text')))}"
                     f"{link}</li>")
    return f"<h2 id='findings'>Findings</h2><ul class='findings'>{''.join(items)}</ul>"


def _verdict(word: Any, detail: Any = None) -> str:
    """A table cell for one sanity check: pass / fail / not applicable, with its number."""
    cls = "pass" if word == "pass" else "fail" if word == "fail" else "na"
    extra = f" ({fmt(detail)})" if isinstance(detail, float) else ""
    return f"<td class='{cls}'>{escape(str(word or 'n/a'))}{escape(extra)}</td>"


def _sanity(s: dict[str, Any]) -> str:
    rec = s["diagnostics"].get("sanity_checks")
    methods = ((rec or {}).get("metrics") or {}).get("methods") or {}
    if not methods:
        return ""
    verdicts = sanity_verdicts(s)
    rows = []
    for name, m in methods.items():
        v = verdicts.get(name, {}).get("verdict", "fail")
        first = f"<td class='{v}'>{escape(name)}<br><b>{'read its maps' if v == 'pass' else 'do not read'}</b></td>"
        if "error" in m:
            rows.append(f"<tr>{first}<td colspan='4' class='fail'>{escape(str(m['error']))}</td></tr>")
            continue
        rows.append(f"<tr>{first}{_verdict(m.get('model_randomization'), m.get('final_spearman'))}"
                    f"{_verdict(m.get('target_randomization'), m.get('target_randomization_spearman'))}"
                    f"{_verdict(m.get('completeness'), m.get('completeness_median_relative_error'))}"
                    f"{_verdict('fail' if m.get('degenerate') else 'pass')}</tr>")
    return ("<h2 id='sanity'>Sanity checks</h2><p>Does each method explain the model? Maps must change when the "
            "weights are randomized (Spearman after the last layer below the threshold) and when another class is "
            "explained; IG attributions must sum to f(x) - f(baseline); no map may be constant, zero or NaN.</p>"
            "<div class='wrap'><table><tr><th>method</th><th>model randomization (final Spearman)</th><th>target "
            "randomization</th><th>completeness (median rel. error)</th><th>non-degenerate</th></tr>"
            + "".join(rows) + "</table></div>")


def _gallery(writer: ReportWriter, s: dict[str, Any]) -> str:
    items = s.get("gallery") or []
    if not items:
        return ""
    parts = ["<h2 id='gallery'>Worst cases</h2><p>The samples with the largest error, each with every attribution "
             "method's map over its input: are the failures looking at the wrong place, or at the right place with "
             "the wrong answer?</p>"]
    for it in items:
        facts = [(k, v) for k, v in it.items() if k not in ("figures", "rank", "agreement", "untrusted", "metadata")]
        facts += [(str(k), v) for k, v in (it.get("metadata") or {}).items()]
        head = "".join(f"<th>{escape(str(k).replace('_', ' '))}</th>" for k, _ in facts)
        cells = "".join(f"<td class=num>{escape(value_text(v, str(k)))}</td>" for k, v in facts)
        notes = []
        for a in it.get("agreement") or []:
            rho = a.get("spearman")
            word = a.get("verdict") or ("disagree" if a.get("disagree") else "agree")  # the findings' own word
            cls = "warning" if a.get("disagree") else "ok"
            notes.append(f"<p class='{cls}'>{escape(' and '.join(a['methods']))} {word} on this sample (rank "
                         f"correlation of the maps {escape(fmt(rho, 2))}"
                         f"{' &lt; 0.3' if a.get('disagree') else ''}).</p>")
        for n, why in (it.get("untrusted") or {}).items():
            notes.append(f"<p class='distrust'>{escape(n)}: do not read this map ({escape(why)}).</p>")
        main = [f for f in it["figures"] if "_" not in PurePosixPath(f).stem.split("gallery_worst", 1)[-1]]
        rest = "".join(_img(writer, f, "do not read:" if any(f.endswith(f"_{n}.png") for n in it.get("untrusted") or {})
                            else "") for f in it["figures"] if f not in main)
        figs = "".join(_img(writer, f) for f in main) + (f"<div class='grid'>{rest}</div>" if rest else "")
        parts.append(f"<div class='gallery-item'><h3>#{it['rank'] + 1}: sample {escape(str(it['index']))}</h3>"
                     f"<div class='wrap'><table><tr>{head}</tr><tr>{cells}</tr></table></div>{''.join(notes)}"
                     f"{figs}</div>")
    return "".join(parts)


def _drift(writer: ReportWriter, s: dict[str, Any]) -> str:
    d = s.get("drift")
    if not d:
        return ""
    if "error" in d:
        return f"<h2 id='drift'>Over training</h2><p class='failed'>{escape(str(d['error']))}</p>"
    rows = [("epochs", d["epochs"]), ("dead-unit fraction per epoch", d["dead_unit_fraction"])]
    rows += [(f"{n}: Spearman with the previous autopsy", v) for n, v in d["attributions"].items()]
    return ("<h2 id='drift'>Over training</h2><p>Periodic autopsies of the live module during training: how much "
            "each method's mean map changed between consecutive autopsies, and the dead units.</p>" + kv_table(rows)
            + "<div class='grid'>" + "".join(_img(writer, a) for a in d.get("artifacts", []) if a.endswith(".png"))
            + "</div>")


def _glance(s: dict[str, Any], untrusted: dict[str, str]) -> str:
    verdicts = sanity_verdicts(s)
    rows = []
    for n, r in s["diagnostics"].items():
        v = verdicts.get(n, {}).get("verdict", "")
        trust = "do not read" if n in untrusted else v
        rows.append(f"<tr><td><a href='#d-{escape(n)}'>{escape(n)}</a></td><td class='{escape(r['status'])}'>"
                    f"{escape(r['status'])}</td><td class=num>{r.get('seconds') or 0:.2f} s</td>"
                    f"<td class='{'fail' if n in untrusted else v or 'na'}'>{escape(trust)}</td>"
                    f"<td>{escape(r.get('reason') or '')}</td><td>{'<br>'.join(escape(str(f)) for f in r['flags'])}"
                    "</td></tr>")
    return ("<h2 id='glance'>Diagnostics at a glance</h2><div class='wrap'><table><tr><th>diagnostic</th><th>status"
            "</th><th>time</th><th>sanity</th><th>reason</th><th>flags</th></tr>" + "".join(rows) + "</table></div>")


def _sections(writer: ReportWriter, s: dict[str, Any], untrusted: dict[str, str]) -> tuple[str, list[str]]:
    eeg = s.get("eeg") if isinstance(s.get("eeg"), dict) else {}
    names = eeg.get("channel_names")
    sections, details = [], []
    for name, r in s["diagnostics"].items():
        results, engine = split_metrics(r.get("metrics") or {})
        if engine:
            details.append(f"<h3>{escape(name)}</h3>" + kv_table([(k, value_text(v, k)) for k, v in engine.items()]))
        warn = f"do not read: {untrusted[name]}" if name in untrusted else ""
        badge = f"<span class='badge'>do not read these maps</span>" if warn else ""
        distrust = f"<p class='distrust'>{escape(warn)}</p>" if warn else ""
        flags = ("<ul class='flags'>" + "".join(f"<li>{escape(str(f))}</li>" for f in r["flags"]) + "</ul>"
                 if r["flags"] else "")
        figures = "".join(_img(writer, a, "do not read:" if warn else "") for a in r["artifacts"]
                          if a.endswith(".png"))
        files = ", ".join(escape(a) for a in r["artifacts"] if not a.endswith(".png"))
        reason = f"<p class='{escape(r['status'])}'>{escape(str(r['reason']))}</p>" if r.get("reason") else ""
        sections.append(f"<h2 id='d-{escape(name)}'>{escape(name)} <small class='{escape(r['status'])}'>"
                        f"{escape(r['status'])}</small>{badge}</h2>{distrust}{reason}{flags}"
                        + metric_tables(results, names)
                        + (f"<div class='grid'>{figures}</div>" if figures else "")
                        + (f"<details><summary>arrays (numpy)</summary><p>{files}</p></details>" if files else ""))
    return "".join(sections), details


def _run_details(s: dict[str, Any], engine: list[str]) -> str:
    ck, sm = s.get("checkpoint") or {}, s.get("samples") or {}
    rows = [("created", s.get("created")), ("checkpoint", ck.get("path") or ck.get("source")),
            ("checkpoint source", ck.get("source")), ("checkpoint sha256", ck.get("sha256")),
            ("samples", f"{s.get('n_samples')} from {sm.get('source')} ({sm.get('sampling')}), input shape "
                        f"{sm.get('input_shape')}, labels: {sm.get('has_labels')}, metadata: "
                        f"{', '.join(map(str, sm.get('metadata_fields') or [])) or 'none'}"),
            ("target", s.get("target")), ("device", f"{s.get('device')} x {s.get('world_size', 1)} process(es)"),
            ("duration", f"{s.get('seconds', 0):.1f} s"), ("eeg", s.get("eeg"))]
    rows += [(f"version: {k}", v) for k, v in (s.get("versions") or {}).items()]
    config = [(next(iter(c)), value_text(next(iter(c.values())) or {})) if isinstance(c, dict) and len(c) == 1
              else ("diagnostic", value_text(c)) for c in s.get("config") or []]
    return ("<h2 id='run-details'>Run details</h2><details><summary>checkpoint, versions, configuration and engine "
            "internals (chunking, calibration, precision)</summary>" + kv_table(rows, "run")
            + kv_table(config, "configuration (diagnostic: options)") + "".join(engine) + "</details>")


def render_html(writer: ReportWriter, summary: dict[str, Any]) -> str:
    s = summary
    findings = s.get("findings")
    if findings is None:
        findings = compute_findings(s, writer.root)
    s = {**s, "findings": findings}
    untrusted = untrusted_methods(s)
    sections, engine = _sections(writer, s, untrusted)
    warnings = "".join(f"<p class='partial'>warning: {escape(str(w))}</p>" for w in s.get("warnings") or [])
    body = (_header(s) + warnings + _findings(findings) + _glance(s, untrusted) + _sanity(s) + _gallery(writer, s)
            + explorer_section(s) + _drift(writer, s) + sections + _run_details(s, engine))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'><title>cerebro autopsy</title>"
            f"<style>{_CSS}</style></head><body><main>{body}</main></body></html>")


def write_html(writer: ReportWriter, summary: dict[str, Any]) -> None:
    """Render ``summary`` and the figures it lists into ``report.html``."""
    writer.write_text("report.html", render_html(writer, summary))
