"""Data of the report's sample explorer: every studied sample, every attribution method's map, quantised and
stored beside the page so that ``report.html`` stays small however many samples were studied.

Written once the diagnostics have run (while the inputs are still in memory), into ``<output_dir>/explorer/``:

- ``index.js``: one table row per sample (position, dataset index, target, prediction, error, metadata, per-sample
  faithfulness and convergence), the sample's findings as compact lists (``["g", method, why]`` degenerate map,
  ``["a" | "d", method, method, spearman]`` agree / disagree, ``["c", method, relative delta, tolerance]`` not
  converged; methods by position in ``methods``) and the methods' descriptions; loaded with the page.
- ``maps_<k>.js``: for the samples of chunk ``k``, the input and each method's map as ``uint8`` (base64) with a
  per-sample scale; loaded by the page only when a sample of that chunk is selected.

Plain ``<script src>`` files, not ``fetch``: browsers refuse ``fetch`` of local files opened as ``file://``.
Maps are quantised signed: ``q = 128 + round(127 * v / s)`` with ``s = max |v|`` of that sample and method (0 marks
a non-finite value); inputs ``q = round(255 * (x - lo) / (hi - lo))``. The page draws them on ``<canvas>``
(``cerebro/report/static/explorer.js``) the way the worst-case gallery draws them.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cerebro.engine.degenerate import is_constant
from cerebro.report.evidence import DISAGREE, map_agreement
from cerebro.report.explorer_stats import faithfulness_per_sample, convergence_per_sample, table_columns
from cerebro.report.findings import untrusted_methods
from cerebro.report.writer import ReportWriter, jsonable

__all__ = ["write_explorer", "map_kind", "quantise_map", "quantise_input", "FOLDER", "CHUNK_BYTES"]

log = logging.getLogger("cerebro")

#: The explorer's folder beside ``report.html``.
FOLDER = "explorer"
#: About this many bytes of quantised maps per ``maps_<k>.js`` file (whole samples; 1 to 256 samples a file).
CHUNK_BYTES = 2 << 20


def quantise_map(v: np.ndarray) -> tuple[np.ndarray, float]:
    """``(uint8 codes, scale)`` of a signed map: 128 = 0, 1..255 = -scale..+scale, 0 = not finite."""
    v = np.asarray(v, dtype=np.float64)
    finite = np.isfinite(v)
    scale = float(np.max(np.abs(v[finite]))) if finite.any() else 0.0
    q = np.full(v.shape, 128, dtype=np.uint8)
    if scale > 0:
        q = (128 + np.rint(np.clip(np.where(finite, v, 0.0) / scale, -1, 1) * 127)).astype(np.uint8)
    q[~finite] = 0
    return q, scale


def quantise_input(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(uint8 codes, lo, hi)`` of an input: ``lo`` -> 0 and ``hi`` -> 255 (non-finite values -> 0)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    q = np.zeros(x.shape, dtype=np.uint8) if hi <= lo else np.rint((x - lo) / (hi - lo) * 255).astype(np.uint8)
    return q, lo, hi


def map_kind(input_kind: str, x_shape: tuple[int, ...], map_shape: tuple[int, ...], spectral: bool) -> str:
    """How the page draws a map of ``map_shape`` over an input of ``x_shape``: ``signal`` (channel x time traces
    over the map, or a time band for time-only layer maps), ``image`` (blended heat map), ``tokens`` (coloured
    tokens), ``spectral`` (channel x frequency), ``heatmap`` (any other 2-D map) or ``bars`` (anything else)."""
    size = int(np.prod(map_shape)) if map_shape else 1
    if spectral and len(map_shape) >= 2:
        return "spectral"
    if input_kind == "token_ids" and len(x_shape) == 1 and map_shape[:1] == x_shape[:1]:
        return "tokens"
    if len(x_shape) == 2 and size in (x_shape[0] * x_shape[1], x_shape[1]):
        return "signal"
    if len(x_shape) == 3 and len(map_shape) == 3 and map_shape[-2:] == x_shape[-2:]:
        return "image"
    if len([d for d in map_shape if d > 1]) == 2:
        return "heatmap"
    return "bars"


def _degenerate(m: np.ndarray) -> str | None:
    if not np.isfinite(m).all():
        return "non-finite"
    if is_constant(m):
        return "all zero" if not np.any(m) else "constant"
    return None


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _methods(summary: dict[str, Any], root: Path, n: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every attribution diagnostic with ``n`` stored maps (read memory-mapped), and the reasons others were left
    out."""
    maps, left = {}, {}
    for name, r in summary["diagnostics"].items():
        if r.get("status") != "ok" or f"arrays/{name}/attributions.npy" not in r.get("artifacts", []):
            continue
        a = np.load(root / "arrays" / name / "attributions.npy", mmap_mode="r")
        if a.shape[0] != n:
            left[name] = f"{a.shape[0]} maps stored for {n} samples"
            continue
        maps[name] = a
    return maps, left


def _array(root: Path, diag: str, key: str, n: int) -> np.ndarray | None:
    path = root / "arrays" / diag / f"{key}.npy"
    if not path.exists():
        return None
    a = np.load(path, mmap_mode="r")
    return np.asarray(a) if a.shape[:1] == (n,) else None


def _labels(summary: dict[str, Any], root: Path, n: int) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                    np.ndarray | None, str]:
    """``(target, prediction, error, error_name)``: regression error is prediction - target (positive =
    over-prediction); classification error is the per-sample loss of ``failure_modes``."""
    pred, target = _array(root, "predictions", "predictions", n), _array(root, "predictions", "targets", n)
    kind = (summary.get("target") or {}).get("kind") if isinstance(summary.get("target"), dict) else None
    if kind == "classification":
        return target, pred, _array(root, "failure_modes", "errors", n), "loss"
    if pred is not None and target is not None and pred.size == n and target.size == n:
        return target, pred, pred.reshape(n).astype(np.float64) - target.reshape(n).astype(np.float64), "error"
    return target, pred, None, "error"


def _scalar(a: np.ndarray | None, i: int) -> Any:
    if a is None:
        return None
    v = np.asarray(a[i]).reshape(-1)
    return _short(v[0].item()) if v.size == 1 else [_short(x.item()) for x in v[:8]]


def _short(v: Any) -> Any:
    """Floats to 6 significant digits (the table shows 4): keeps ``index.js`` small."""
    return float(f"{v:.6g}") if isinstance(v, float) and np.isfinite(v) else v


def _agreement(maps: dict[str, np.ndarray], kinds: dict[str, str]) -> list[dict[str, Any]]:
    names = [m for m in maps if kinds[m] in ("signal", "image", "tokens")]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = map_agreement(maps[a], maps[b])
            if rho is not None:
                out.append({"methods": [a, b], "spearman": round(float(rho), 3), "disagree": bool(rho < DISAGREE)})
    return out


def write_explorer(ctx: Any, writer: ReportWriter, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``explorer/index.js`` and ``explorer/maps_<k>.js`` for every sample of ``ctx.samples`` and record
    ``summary["explorer"]`` (sample and method counts, files, bytes; or ``error`` with the reason, since the
    explorer is a view whose failure never costs the report)."""
    try:
        info = _write(ctx, writer, summary)
    except Exception as err:  # noqa: BLE001 - a view; the reason is recorded and shown on the page
        log.warning("cerebro: could not write the sample explorer: %s: %s", type(err).__name__, err)
        info = {"error": f"{type(err).__name__}: {err}"}
    summary["explorer"] = info
    return info


def _write(ctx: Any, writer: ReportWriter, summary: dict[str, Any]) -> dict[str, Any]:
    from cerebro.report.explorer_html import copy_static

    root, n = writer.root, int(ctx.samples.n)
    folder = root / FOLDER
    folder.mkdir(exist_ok=True)
    for old in folder.glob("maps_*.js"):  # a resumed run rewrites every chunk
        old.unlink()
    input_kind = (summary.get("samples") or {}).get("input_kind") or "float"
    x_shape = tuple(int(d) for d in ctx.samples.input_shape)
    stored, left_out = _methods(summary, root, n)
    spectral = {m for m in stored if (root / "arrays" / m / "frequencies.npy").exists()}
    kinds = {m: map_kind(input_kind, x_shape, tuple(a.shape[1:]), m in spectral) for m, a in stored.items()}
    untrusted = untrusted_methods(summary)
    target, pred, error, error_name = _labels(summary, root, n)
    faith = faithfulness_per_sample(root, n)
    conv = convergence_per_sample(summary, root, n, list(stored))
    meta = {str(k): list(v) for k, v in ctx.samples.metadata.items() if len(v) == n}
    per_sample = int(np.prod(x_shape)) + sum(int(np.prod(a.shape[1:])) for a in stored.values())
    chunk = int(max(1, min(256, CHUNK_BYTES // max(1, per_sample))))
    rows, notes_all = [], []
    order = {m: k for k, m in enumerate(stored)}
    indices = np.asarray(ctx.samples.indices).reshape(-1)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xs = ctx.samples.x[start:stop]  # a tensor (or rows read back from the spill file)
        xs = xs.numpy() if input_kind == "token_ids" else xs.float().numpy()
        samples = []
        for i in range(start, stop):
            x = np.asarray(xs[i - start])
            maps = {m: np.asarray(a[i], dtype=np.float64) for m, a in stored.items()}
            views = {m: v.sum(-1) if kinds[m] == "tokens" and v.ndim == 2 else v for m, v in maps.items()}
            entry: dict[str, Any] = {"maps": {}}
            if input_kind == "token_ids":
                entry["ids"] = [int(t) for t in x.reshape(-1)]
            else:
                q, lo, hi = quantise_input(x)
                entry.update(x=_b64(q), lo=lo, hi=hi)
            notes: list[list[Any]] = []  # compact, the page words them: [kind, method position(s), numbers]
            for m, v in views.items():
                q, scale = quantise_map(v)
                entry["maps"][m] = [_b64(q), scale, list(q.shape)]
                why = _degenerate(v)
                if why:
                    notes.append(["g", order[m], why])
            for a in _agreement({m: v for m, v in views.items() if _degenerate(v) is None}, kinds):
                notes.append(["d" if a["disagree"] else "a", order[a["methods"][0]], order[a["methods"][1]],
                              a["spearman"]])
            for m, c in conv.items():
                if c["relative"][i] is not None and not c["converged"][i]:
                    notes.append(["c", order[m], c["relative"][i], c["tolerance"]])
                elif not c["map_converged"][i]:
                    notes.append(["m", order[m]])
            samples.append(entry)
            notes_all.append(notes)
            row = [i, int(indices[i]) if i < indices.size else i, _scalar(target, i), _scalar(pred, i),
                   _scalar(error, i)]
            row += [meta[k][i] for k in meta]
            row += [f[i] for f in faith.values()]
            row += [c["relative"][i] for c in conv.values()]
            rows.append(row)
        payload = json.dumps(jsonable({"start": start, "samples": samples}), separators=(",", ":"), allow_nan=False)
        writer.write_text(f"{FOLDER}/maps_{start // chunk:03d}.js", f"CerebroExplorer.chunk({payload});\n")
    eeg = summary.get("eeg") if isinstance(summary.get("eeg"), dict) else {}
    methods = [{"name": m, "kind": kinds[m], "shape": list(stored[m].shape[1:]),
                "untrusted": untrusted.get(m), "frequencies": _freqs(root, m) if m in spectral else None}
               for m in stored]
    index = {"version": 1, "n": n, "chunk": chunk, "input_kind": input_kind, "input_shape": list(x_shape),
             "target_kind": (summary.get("target") or {}).get("kind") if isinstance(summary.get("target"), dict)
             else None, "error_name": error_name,
             "channel_names": eeg.get("channel_names"), "sfreq": eeg.get("sfreq"),
             "columns": table_columns(list(meta), list(faith), list(conv), error_name),
             "methods": methods, "left_out": left_out, "rows": rows, "notes": notes_all, "disagree": DISAGREE}
    text = json.dumps(jsonable(index), separators=(",", ":"), allow_nan=False)
    writer.write_text(f"{FOLDER}/index.js", f"CerebroExplorer.index({text});\n")
    copy_static(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {"n_samples": n, "methods": list(stored), "kinds": kinds, "left_out": left_out, "chunk": chunk,
            "files": len(files), "index_bytes": (folder / "index.js").stat().st_size,
            "bytes": int(sum(p.stat().st_size for p in files))}


def _freqs(root: Path, method: str) -> list[float]:
    return [float(f) for f in np.load(root / "arrays" / method / "frequencies.npy").reshape(-1)]
