"""Worst-case gallery: the samples ``failure_modes`` ranks worst, each drawn once with every attribution method's
map over it, and a note when the methods disagree on that sample.

Runs after the diagnostics, while the samples are still in memory; maps are read back row by row from each
diagnostic's ``attributions.npy`` (memory-mapped, so a large run stays flat). A method whose maps should not be
read (failed sanity checks, faithfulness ``do_not_read``) is drawn with that warning in its panel title.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from cerebro.engine.context import AutopsyContext
from cerebro.report.evidence import DISAGREE, agreement_word, map_agreement
from cerebro.report.explorer import write_explorer
from cerebro.report.findings import untrusted_methods
from cerebro.report.overlays import fits, methods_figure, sample_figure
from cerebro.report.writer import ReportWriter

__all__ = ["write_gallery", "agreement"]


def agreement(maps: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Pairwise rank correlation of one sample's maps (on their common view, e.g. time courses for a channel x time
    map against a time-only layer map); ``disagree`` when it is below :data:`DISAGREE`, ``verdict`` the same word
    the agreement finding uses (:func:`cerebro.report.evidence.agreement_word`)."""
    out = []
    for a, b in combinations(maps, 2):
        rho = map_agreement(maps[a], maps[b])
        if rho is not None:
            out.append({"methods": [a, b], "spearman": rho, "disagree": rho < DISAGREE,
                        "verdict": agreement_word(rho)})
    return out


def write_gallery(ctx: AutopsyContext, writer: ReportWriter, summary: dict[str, Any], k: int = 3) -> list[dict]:
    """Figures ``figures/gallery_worst<r>.png`` (one per sample, every method's map over its input; one figure per
    method, ``gallery_worst<r>_<method>.png``, for inputs that cannot be drawn together) for the ``k`` worst
    samples; returns their records (dataset index, error, prediction, target, metadata, figures, agreement,
    untrusted methods), also stored as ``summary["gallery"]``."""
    write_explorer(ctx, writer, summary)  # every sample and method, beside report.html (cerebro.report.explorer)
    worst = (summary["diagnostics"].get("failure_modes", {}).get("metrics") or {}).get("worst") or []
    methods = [n for n, r in summary["diagnostics"].items()
               if r["status"] == "ok" and f"arrays/{n}/attributions.npy" in r["artifacts"]]
    if not worst or not methods:
        return []
    untrusted = untrusted_methods(summary)
    views = {d.name: d for d in ctx.extras.get("diagnostics", []) if hasattr(d, "sample_view")}
    position = {int(i): p for p, i in enumerate(ctx.samples.indices)}
    stored = {n: np.load(writer.root / "arrays" / n / "attributions.npy", mmap_mode="r") for n in methods}
    records = []
    for rank, item in enumerate(worst[:k]):
        p = position.get(int(item["index"]))
        if p is None:
            continue
        x = ctx.samples.x[p : p + 1].float().numpy()[0]
        maps = {n: np.asarray(stored[n][p], dtype=np.float64) for n in methods}
        notes = {n: ("do not read: " + untrusted[n].split(":")[0]) if n in untrusted else "" for n in methods}
        together = [n for n in methods if fits(x, maps[n])]
        fig = methods_figure(x, [(n, maps[n], notes[n]) for n in together], writer.eeg,
                             f"worst #{rank + 1}: sample {item['index']}") if together else None
        figures = [writer.save_figure(f"gallery_worst{rank}", fig)] if fig is not None else []
        for n in methods:  # maps in other units (e.g. frequency) or inputs drawn one method at a time
            if fig is None or n not in together:
                title = f"{n}, sample {item['index']}" + (f" ({notes[n]})" if notes[n] else "")
                view = views[n].sample_view(x, maps[n], title) if n in views else sample_figure(x, maps[n], title,
                                                                                                writer.eeg)
                figures.append(writer.save_figure(f"gallery_worst{rank}_{n}", view))
        records.append({**item, "rank": rank, "figures": figures, "agreement": agreement(
                            {n: maps[n] for n in together}),
                        "untrusted": {n: untrusted[n] for n in methods if n in untrusted}})
    summary["gallery"] = records
    return records
