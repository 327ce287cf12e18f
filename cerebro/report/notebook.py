"""The autopsy's result in a notebook: :class:`AutopsySummary` is the summary mapping ``run_autopsy`` has always
returned (a ``dict``: ``json.dumps``, ``==`` and its keys are unchanged) that also renders itself in Jupyter
(``_repr_html_``: status, findings, the diagnostics at a glance, the key figures inline), and
:func:`load_autopsy` gives the same object for a finished output folder."""

from __future__ import annotations

import base64
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from cerebro.errors import CerebroConfigError

__all__ = ["AutopsySummary", "load_autopsy", "KEY_FIGURES"]

#: Figures shown inline, in this order, when the autopsy wrote them (the first worst case, then predictions).
KEY_FIGURES = ("gallery_worst0.png", "predictions_scatter.png", "predictions_confusion_matrix.png",
               "failure_modes_worst.png")
_MAX_FIGURES = 3

_STYLE = """<style>.cerebro-autopsy table{border-collapse:collapse;font-size:.85em}.cerebro-autopsy td,
.cerebro-autopsy th{border:1px solid #d4d4d4;padding:.15em .5em;text-align:left}.cerebro-autopsy ul.findings{
list-style:none;padding:0}.cerebro-autopsy ul.findings li{padding:.3em .6em;margin:.2em 0;border-left:4px solid
#8fa3bf;background:#f6f8fb}.cerebro-autopsy li.sev-warning{border-color:#e0a100;background:#fff9e8}
.cerebro-autopsy li.sev-problem{border-color:#c62828;background:#fdeeee}.cerebro-autopsy .sev{font-weight:700;
font-size:.75em;text-transform:uppercase;margin-right:.5em}.cerebro-autopsy img{max-width:100%}
.cerebro-autopsy .ok,.cerebro-autopsy .status-ok{color:#176f2c}.cerebro-autopsy .failed,.cerebro-autopsy
.status-bad{color:#b00020}.cerebro-autopsy .skipped,.cerebro-autopsy .status-warn{color:#9a5800}</style>"""


class AutopsySummary(dict):
    """The autopsy's summary (exactly the mapping written to ``summary.json``) that displays itself in Jupyter.

    ``output_dir`` (an attribute, not a key) is the folder holding ``report.html``, ``figures/`` and ``arrays/``.
    """

    def __init__(self, summary: dict[str, Any], output_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(summary)
        self.output_dir = Path(output_dir) if output_dir is not None else None

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (multiprocessing, caches) as the same class
        return (AutopsySummary, (dict(self), self.output_dir))

    def _figures(self) -> list[tuple[str, str]]:
        if self.output_dir is None:
            return []
        out = []
        for name in KEY_FIGURES:
            path = self.output_dir / "figures" / name
            if path.is_file() and len(out) < _MAX_FIGURES:
                out.append((path.stem, base64.b64encode(path.read_bytes()).decode("ascii")))
        return out

    def _repr_html_(self) -> str:
        """Status, findings, the diagnostics at a glance and the key figures (embedded), with the report's path."""
        from cerebro.report.findings import display_status, untrusted_methods
        from cerebro.report.html import _findings, _glance, _status_class

        s = dict(self)
        s.setdefault("diagnostics", {})
        word = display_status(s)
        reason = f"<p class='failed'>{escape(str(s['reason']))}</p>" if s.get("reason") else ""
        report = self.output_dir / "report.html" if self.output_dir is not None else None
        link = (f"<p>Full report: <a href='{escape(report.as_posix())}' target='_blank'>{escape(str(report))}</a>"
                f" ({s.get('n_samples')} samples, {s.get('seconds', 0) or 0:.1f} s)</p>") if report else ""
        figures = "".join(f"<figure style='margin:.4em 0'><img alt='{escape(stem)}' src='data:image/png;base64,"
                          f"{data}'><figcaption>{escape(stem)}</figcaption></figure>" for stem, data in self._figures())
        try:
            glance = _glance(s, untrusted_methods(s))
        except (KeyError, TypeError):  # a summary without per-diagnostic records (e.g. a failed preflight)
            glance = ""
        return (f"{_STYLE}<div class='cerebro-autopsy'><h3>cerebro autopsy: <span class='{_status_class(word)}'>"
                f"{escape(word)}</span></h3>{reason}{link}{_findings(s.get('findings') or [])}{glance}{figures}</div>")

    def __repr__(self) -> str:
        return f"AutopsySummary({dict.__repr__(self)})"


def load_autopsy(path: str | os.PathLike[str]) -> AutopsySummary:
    """The :class:`AutopsySummary` of a finished autopsy folder (the one holding ``summary.json``), the same
    object ``run_autopsy`` returned for it."""
    folder = Path(path)
    if folder.is_file() and folder.name == "summary.json":
        folder = folder.parent
    summary = folder / "summary.json"
    if not summary.is_file():
        raise CerebroConfigError(f"load_autopsy: no summary.json in {str(folder)!r}: pass the output_dir of an "
                                 "autopsy (the folder holding summary.json and report.html)")
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CerebroConfigError(f"load_autopsy: cannot read {str(summary)!r}: {err}") from err
    return AutopsySummary(data, folder)
