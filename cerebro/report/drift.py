"""Attribution drift over training: how the periodic autopsies (``every_n_epochs``) changed from epoch to epoch.

For each attribution diagnostic, the Spearman rank correlation of its mean |attribution| map between consecutive
periodic autopsies (1 = the model looks at the same places as one period before); for activation health, the mean
dead-unit fraction over layers per epoch. Read from the periodic autopsies' folders, so it also works after a
resumed training run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cerebro.engine.ranks import spearman
from cerebro.report.figures import new_figure
from cerebro.report.writer import ReportWriter

__all__ = ["attribution_drift", "write_drift"]


def _load(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def attribution_drift(history: Sequence[tuple[int, str | Path]]) -> dict[str, Any]:
    """``{"epochs", "attributions": {diag: [rho between epoch i-1 and i]}, "dead_unit_fraction": [...]}`` from the
    ``(epoch, folder)`` of each periodic autopsy, in epoch order. Missing or failed runs give ``None`` entries."""
    runs = [(int(e), Path(p), _load(Path(p))) for e, p in sorted(history, key=lambda h: int(h[0]))]
    epochs = [e for e, _, _ in runs]
    names: list[str] = []
    for _, _, s in runs:
        for n, r in (s or {}).get("diagnostics", {}).items():
            if f"arrays/{n}/mean_abs_attribution.npy" in r.get("artifacts", []) and n not in names:
                names.append(n)
    maps: dict[str, list[np.ndarray | None]] = {n: [] for n in names}
    dead: list[float | None] = []
    for _, folder, s in runs:
        recs = (s or {}).get("diagnostics", {})
        for n in names:
            path = folder / "arrays" / n / "mean_abs_attribution.npy"
            ok = recs.get(n, {}).get("status") == "ok" and path.is_file()
            maps[n].append(np.load(path) if ok else None)
        act = recs.get("activations", {})
        per_layer = (act.get("metrics") or {}).get("per_layer") or {}
        fractions = [v.get("dead_unit_fraction") for v in per_layer.values() if isinstance(v, dict)]
        fractions = [f for f in fractions if isinstance(f, (int, float))]
        dead.append(float(np.mean(fractions)) if act.get("status") == "ok" and fractions else None)
    rhos = {n: [spearman(a, b) if a is not None and b is not None and a.shape == b.shape else None
                for a, b in zip(m[:-1], m[1:])] for n, m in maps.items()}
    return {"epochs": epochs, "folders": [str(p) for _, p, _ in runs], "attributions": rhos,
            "dead_unit_fraction": dead}


def write_drift(writer: ReportWriter, history: Sequence[tuple[int, str | Path]]) -> dict[str, Any]:
    """Compute the drift, save it (``arrays/drift/*.npy``) and its figures; returns the summary's ``drift`` entry."""
    drift = attribution_drift(history)
    epochs, artifacts = drift["epochs"], []
    if len(epochs) >= 2 and drift["attributions"]:
        fig, ax = new_figure(7.0, 3.8)
        for n, rho in drift["attributions"].items():
            ax.plot(epochs[1:], [np.nan if r is None else r for r in rho], marker="o", label=n)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("epoch")
        ax.set_ylabel("Spearman with the previous autopsy")
        ax.set_title("attribution drift: rank correlation of mean maps between consecutive autopsies")
        ax.legend(fontsize=7)
        artifacts.append(writer.save_figure("drift_attributions", fig))
    if any(d is not None for d in drift["dead_unit_fraction"]):
        fig, ax = new_figure(7.0, 3.5)
        ax.plot(epochs, [np.nan if d is None else d for d in drift["dead_unit_fraction"]], marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean dead-unit fraction")
        ax.set_title("activation health over training")
        artifacts.append(writer.save_figure("drift_dead_units", fig))
    for n, rho in drift["attributions"].items():
        artifacts.append(writer.save_array("drift", f"{n}_spearman",
                                           np.array([np.nan if r is None else r for r in rho], dtype=np.float64)))
    drift["artifacts"] = artifacts
    return drift
