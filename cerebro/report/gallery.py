"""Worst-case gallery: the samples ``failure_modes`` ranks worst, each with every attribution method's map.

Runs after the diagnostics, while the samples are still in memory; maps are read back row by row from each
diagnostic's ``attributions.npy`` (memory-mapped, so a large run stays flat).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cerebro.engine.context import AutopsyContext
from cerebro.report.overlays import sample_figure
from cerebro.report.writer import ReportWriter

__all__ = ["write_gallery"]


def write_gallery(ctx: AutopsyContext, writer: ReportWriter, summary: dict[str, Any], k: int = 3) -> list[dict]:
    """Figures ``figures/gallery_worst<r>_<diagnostic>.png`` for the ``k`` worst samples; returns their records
    (dataset index, error, prediction, target, metadata, figures), also stored as ``summary["gallery"]``."""
    worst = (summary["diagnostics"].get("failure_modes", {}).get("metrics") or {}).get("worst") or []
    methods = [n for n, r in summary["diagnostics"].items()
               if r["status"] == "ok" and f"arrays/{n}/attributions.npy" in r["artifacts"]]
    if not worst or not methods:
        return []
    position = {int(i): p for p, i in enumerate(ctx.samples.indices)}
    maps = {n: np.load(writer.root / "arrays" / n / "attributions.npy", mmap_mode="r") for n in methods}
    records = []
    for rank, item in enumerate(worst[:k]):
        p = position.get(int(item["index"]))
        if p is None:
            continue
        x = ctx.samples.x[p : p + 1].float().numpy()[0]
        figures = []
        for n in methods:
            fig = sample_figure(x, np.asarray(maps[n][p]), f"{n}, sample {item['index']}")
            figures.append(writer.save_figure(f"gallery_worst{rank}_{n}", fig))
        records.append({**item, "rank": rank, "figures": figures})
    summary["gallery"] = records
    return records
