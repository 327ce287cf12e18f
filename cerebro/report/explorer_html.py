"""The sample explorer's section of ``report.html``: a fixed-size shell (controls, an empty table, the detail pane)
and three ``<script src>`` tags; the rows come from ``explorer/index.js`` and the maps from ``explorer/maps_<k>.js``
(see :mod:`cerebro.report.explorer`), drawn by ``explorer/explorer.js`` (a copy of the package's
``cerebro/report/static/explorer.js``). The section's size does not depend on the number of samples."""

from __future__ import annotations

import shutil
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["explorer_section", "copy_static", "STATIC_FILES"]

#: Package data files copied beside ``report.html`` into ``explorer/``.
STATIC_FILES = ("explorer.js", "explorer_draw.js", "explorer.css")


def copy_static(folder: Path) -> None:
    """Copy the explorer's script and style sheet from the package into ``folder``."""
    base = resources.files("cerebro.report").joinpath("static")
    for name in STATIC_FILES:
        with resources.as_file(base.joinpath(name)) as src:
            shutil.copyfile(src, folder / name)


def explorer_section(summary: dict[str, Any]) -> str:
    """The explorer's HTML ("" when this autopsy wrote no explorer, e.g. it stopped before the diagnostics ran)."""
    info = summary.get("explorer")
    if not isinstance(info, dict):
        return ""
    head = "<h2 id='explorer-title'>Sample explorer</h2>"
    if "error" in info:
        return head + f"<p class='failed'>The explorer could not be written: {escape(str(info['error']))}</p>"
    left = "".join(f"<p class='partial'>{escape(m)} is not in the explorer: {escape(str(why))}</p>"
                   for m, why in (info.get("left_out") or {}).items())
    return (head + "<p>Every studied sample: sort by a column, filter by index or metadata text, error range, class "
            "or group; select a row (or step with the arrow keys / j and k) to see every attribution method's map "
            "over that sample and its findings. Maps are stored beside this page in <code>explorer/</code> "
            "(8-bit, per-sample scale) and loaded when a sample is shown.</p>" + left +
            "<div id='explorer' class='explorer' tabindex='-1'><div class='ex-controls'>"
            "<input id='explorer-filter' type='search' placeholder='index or metadata text, e.g. 57 or subject 1' "
            "aria-label='filter samples by index or metadata text'>"
            "<label>error from <input id='explorer-error-min' type='number' step='any' aria-label='minimum error'>"
            "</label><label>to <input id='explorer-error-max' type='number' step='any' aria-label='maximum error'>"
            "</label><select id='explorer-class' aria-label='class'><option value=''>every class</option></select>"
            "<select id='explorer-group' aria-label='metadata group'><option value=''>every group</option></select>"
            "<span id='explorer-count' class='ex-count'></span></div>"
            "<div class='ex-table wrap'><table><thead id='explorer-head'></thead><tbody id='explorer-rows'></tbody>"
            "</table></div><div id='explorer-detail' class='ex-detail' aria-live='polite'><p class='ex-hint'>"
            "Select a sample to see its maps.</p></div>"
            "<noscript><p class='partial'>The explorer needs JavaScript; the maps are also in arrays/*/attributions"
            ".npy.</p></noscript></div>"
            f"<link rel='stylesheet' href='{escape(_rel('explorer.css'))}'>"
            f"<script src='{escape(_rel('explorer_draw.js'))}'></script><script src='{escape(_rel('explorer.js'))}'></script>"
            f"<script src='{escape(_rel('index.js'))}'>"
            "</script>")


def _rel(name: str) -> str:
    from cerebro.report.explorer import FOLDER

    return f"{FOLDER}/{name}"
