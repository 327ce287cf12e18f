"""``compare.html``: the page of ``cerebro-autopsy compare`` (self-contained: CSS inline, figures as base64 PNG)."""

from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from typing import Any, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cerebro.report.findings import fmt

__all__ = ["render"]

_CSS = """*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;padding:1.2em clamp(.8em,2.5vw,2.5em);
color:#1d1d1f;line-height:1.45}main{max-width:1900px;margin:0 auto}table{border-collapse:collapse;margin:.5em 0}
table.head{table-layout:fixed;width:100%}table.head th:first-child{width:9em}
td,th{border:1px solid #d4d4d4;padding:.25em .6em;text-align:left;vertical-align:top;font-size:.9em;
overflow-wrap:anywhere}th{background:#f4f4f5}.wrap{max-width:100%;overflow-x:auto}
.ok{color:#176f2c}.failed,.problem{color:#b00020}.skipped,.partial,.warn,.warning{color:#a15c00}
.changed{background:#fff9e8}.maps{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0}img{max-width:100%;height:auto}
@media print{body{padding:0;font-size:10pt}table,figure{break-inside:avoid}}"""


def _e(value: Any) -> str:
    return escape(value if isinstance(value, str) else json.dumps(value))


def _num(value: Optional[float], percent: bool = False) -> str:
    if value is None:
        return "&ndash;"
    return f"{100 * value:+.3g}%" if percent else escape(fmt(value, 4))


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` hold already-escaped HTML cells."""
    return (f"<div class='wrap'><table{f' class={cls}' if cls else ''}><tr>"
            + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table></div>")


def _finding(f: dict[str, Any]) -> str:
    sev = str(f.get("severity"))
    return f"<span class='{escape(sev)}'>{escape(sev)}</span>: {escape(str(f.get('text')))}"


def _png(m: np.ndarray, title: str) -> tuple[str, str]:
    """Base64 PNG of a map (1-D: line, 2-D: image; more axes averaged down to 2-D) and a note on what was done."""
    m = np.squeeze(np.asarray(m, dtype=np.float64))
    note = ""
    if m.ndim > 2:
        note = f" (averaged over the first {m.ndim - 2} axes of {list(m.shape)})"
        m = m.reshape(-1, *m.shape[-2:]).mean(axis=0)
    fig = Figure(figsize=(5.5, 3.4), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if m.ndim <= 1:
        ax.plot(np.atleast_1d(m))
        ax.set_xlabel("position")
    else:
        fig.colorbar(ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest"), ax=ax)
        ax.set_xlabel("last axis (e.g. time)")
        ax.set_ylabel("rows (e.g. channels)")
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii"), note


def _maps(name: str, a: Path, b: Path) -> str:
    cells, notes = [], set()
    for side, folder in (("A", a), ("B", b)):
        data, note = _png(np.load(folder / "arrays" / name / "mean_abs_attribution.npy"), f"{side}: mean |attribution|")
        notes.add(note)
        cells.append(f"<figure><img alt='{escape(name)} {side}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{side}</figcaption></figure>")
    caption = ("Mean |attribution| over the samples, A left, B right; each map has its own color scale, so compare "
               "where the importance lies, not its size" + escape("".join(sorted(notes))) + ".")
    return f"<div class='maps'>{''.join(cells)}</div><p><small>{caption}</small></p>"


def render(result: dict[str, Any], a: Path, b: Path) -> str:
    """The HTML page of a comparison dict (``a`` and ``b``: the folders, to read the mean maps for the figures)."""
    ra, rb = result["a"], result["b"]
    head_rows = [[escape(k), _e(ra[k] if k != "checkpoint" else ra[k]["path"]),
                  _e(rb[k] if k != "checkpoint" else rb[k]["path"])]
                 for k in ("folder", "checkpoint", "created", "n_samples", "target", "input_shape", "status")]
    head_rows.insert(2, ["sha256", _e(ra["checkpoint"]["sha256"]), _e(rb["checkpoint"]["sha256"])])
    parts = ["<h1>cerebro autopsy comparison</h1>", _table(["", "A", "B"], head_rows, "head")]
    parts += [f"<p class='warn'>warning: {escape(w)}</p>" for w in result["warnings"]]

    d = result["diagnostics"]
    parts.append("<h2>Diagnostics</h2>")
    if d["added"] or d["removed"]:
        parts.append(f"<p>only in B (added): {escape(', '.join(d['added'])) or '&ndash;'}<br>"
                     f"only in A (removed): {escape(', '.join(d['removed'])) or '&ndash;'}</p>")
    if d["status_changes"]:
        parts.append(_table(["diagnostic", "A", "B", "reason in B"], [
            [escape(c["diagnostic"]), f"<span class='{escape(str(c['a']))}'>{escape(str(c['a']))}</span>",
             f"<span class='{escape(str(c['b']))}'>{escape(str(c['b']))}</span>", escape(str(c["reason_b"] or ""))]
            for c in d["status_changes"]]))
    else:
        parts.append("<p>no status changes</p>")

    fd = result.get("findings") or {}
    parts.append("<h2>Findings</h2>")
    rows = ([["changed", f"A: {_finding(c['a'])}<br>B: {_finding(c['b'])}"] for c in fd.get("changed", [])]
            + [["only in A", _finding(f)] for f in fd.get("only_a", [])]
            + [["only in B", _finding(f)] for f in fd.get("only_b", [])])
    parts.append(_table(["", "finding"], rows) if rows else "<p>the same findings in A and B</p>")

    parts.append("<h2>Changed flags</h2>")
    parts.append(_table(["diagnostic", "changed (A → B)", "only in A", "only in B"], [
        [escape(n), "<br>".join(f"<span class=changed>{escape(c['a'])} &rarr; {escape(c['b'])}</span>"
                                for c in f_.get("changed", [])),
         "<br>".join(escape(f) for f in f_["only_a"]), "<br>".join(escape(f) for f in f_["only_b"])]
        for n, f_ in result["flags"].items()]) if result["flags"] else "<p>no changed flags</p>")

    parts.append("<h2>Attribution similarity</h2>")
    if result["attributions"]:
        parts.append("<p><small>Spearman: rank correlation of the maps (1 = same ordering of importance); cosine: "
                     "of the mean maps; per-sample: Spearman of |attribution| of the same dataset sample in A and "
                     "B.</small></p>")
        rows = []
        for n, r in result["attributions"].items():
            ps = r["per_sample"]
            rows.append([escape(n), _num(r["spearman"]), _num(r["cosine"]),
                         "&ndash;" if ps is None else f"{_num(ps['mean'])} / {_num(ps['min'])}",
                         "&ndash;" if ps is None else str(ps["n_matched"]),
                         escape(r["reason"] or r["per_sample_reason"] or "")])
        parts.append(_table(["diagnostic", "Spearman (mean maps)", "cosine (mean maps)",
                             "per-sample Spearman mean / min", "matched samples", "note"], rows))
        for n, r in result["attributions"].items():
            if r["compared"]:
                parts.append(f"<h3>{escape(n)}</h3>" + _maps(n, a, b))
    else:
        parts.append("<p>no attribution diagnostic in both</p>")

    ti = result.get("training_influence")
    if ti is not None:
        parts.append("<h2>Training influence</h2>")
        if not ti["compared"] or ti["reason"]:
            parts.append(f"<p>{escape(str(ti['reason']))}</p>")
        if ti["compared"]:
            parts.append(_table(["", "A → B"], [
                ["mode", f"{escape(str(ti['mode_a']))} → {escape(str(ti['mode_b']))}"],
                ["training samples", f"{_e(ti['n_train_a'])} → {_e(ti['n_train_b'])}"],
                [f"top {ti['top_k']} self-influential in both", _num(ti["top_overlap"], True)],
                ["only in A's top / only in B's top", f"{_e(ti['only_a_top'])} / {_e(ti['only_b_top'])}"],
                ["Spearman of self-influence", _num(ti["self_influence_spearman"])],
                ["proponents in common per studied sample (mean)", _num(ti["proponent_overlap_mean"], True)],
                ["studied samples matched", str(ti["samples_compared"])]]))

    parts.append("<h2>Metrics (delta = B - A)</h2>")
    for n, rows in result["metrics"].items():
        if rows:
            parts.append(f"<h3>{escape(n)}</h3>" + _table(["metric", "A", "B", "B - A", "relative"], [
                [escape(r["metric"]), _num(r["a"]), _num(r["b"]), _num(r["delta"]), _num(r["relative"], True)]
                for r in rows]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cerebro autopsy comparison</title>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<style>{_CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")
