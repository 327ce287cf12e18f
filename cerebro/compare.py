"""``cerebro-autopsy compare A B [--out DIR]``: two autopsy folders side by side.

A and B are folders written by an autopsy (``summary.json``, ``arrays/``): two checkpoints of one run, or two runs.
B is read as the later / new one: every delta is ``b - a``. :func:`compare_autopsies` writes ``compare.json`` and a
self-contained ``compare.html`` with

* a header: both checkpoints (path, sha256), created, n_samples, target, status; a warning when the targets or the
  input shapes differ (attribution maps are then not compared);
* metric deltas: every finite numeric scalar metric of each diagnostic present in both (nested dicts flattened to
  dotted keys, e.g. ``per_layer.net.0.mean``), diagnostics added / removed, status changes;
* attribution similarity, for each diagnostic with ``arrays/<diag>/mean_abs_attribution.npy`` in both: Spearman rank
  correlation (average ranks for ties) and cosine similarity of the two mean maps, and, when both stored
  ``attributions.npy`` and ``indices.npy``, the per-sample Spearman correlation of ``|attribution|`` over the samples
  whose dataset index is in both (read row by row from memory-mapped files);
* flags only in A / only in B, per diagnostic, and flags that only changed their numbers (``changed``);
* findings only in A / only in B / changed (matched by kind, diagnostic and text with the numbers stripped).
* faithfulness: the recommended method and each method's verdict and score in A and B (``faithfulness`` key).
* training influence (``training_influence`` key): how the most self-influential training samples and each studied
  sample's proponents shift between A and B.

Engine internals (chunk sizes, calibration speeds, precision; see :data:`cerebro.report.tables.ENGINE_KEYS`) are
not compared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cerebro import __version__
from cerebro.engine.ranks import spearman
from cerebro.errors import CerebroConfigError
from cerebro.report.findings import finding_key, findings_of, strip_numbers
from cerebro.report.tables import is_engine_key

__all__ = ["compare_autopsies", "spearman", "cosine", "run_cli"]

_MAP = "mean_abs_attribution.npy"


def cosine(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Cosine similarity of two same-size arrays (flattened); None when a norm is 0 or a value is non-finite."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return min(1.0, max(-1.0, float(a @ b) / denom)) if denom > 0 and math.isfinite(denom) else None


def _load_summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        raise CerebroConfigError(f"{folder} is not an autopsy folder: {path} does not exist")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CerebroConfigError(f"cannot read {path}: {err}") from err
    if not isinstance(summary, dict) or not isinstance(summary.get("diagnostics"), dict):
        raise CerebroConfigError(f"{path} is not an autopsy summary (no 'diagnostics' table)")
    return summary


def _scalars(metrics: Any, prefix: str = "") -> dict[str, float]:
    """Finite int/float leaves of nested metric dicts, keyed by dotted path (booleans, lists and engine internals
    such as chunk sizes or calibration speeds left out: they say how the numbers were computed, not what changed)."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if is_engine_key(str(key)):
            continue
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = value
    return out


def _metric_rows(ma: Any, mb: Any) -> list[dict[str, Any]]:
    sa, sb = _scalars(ma), _scalars(mb)
    rows = []
    for key in list(sa) + [k for k in sb if k not in sa]:
        a, b = sa.get(key), sb.get(key)
        delta = rel = None
        if a is not None and b is not None:
            delta = b - a
            rel = delta / abs(a) if a != 0 else (0.0 if delta == 0 else None)
            delta, rel = (v if v is None or math.isfinite(v) else None for v in (delta, rel))
        rows.append({"metric": key, "a": a, "b": b, "delta": delta, "relative": rel})
    return rows


def _per_sample(da: Path, db: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """Per-sample Spearman of |attribution| over the dataset indices both sides stored, row by row."""
    files = [d / n for d in (da, db) for n in ("attributions.npy", "indices.npy")]
    if not all(f.is_file() for f in files):
        return None, "attributions.npy / indices.npy not stored on both sides"
    try:
        att_a, idx_a, att_b, idx_b = (np.load(f, mmap_mode="r") for f in files)
    except (OSError, ValueError) as err:
        return None, f"cannot read the per-sample arrays: {err}"
    if att_a.shape[1:] != att_b.shape[1:]:
        return None, f"per-sample map shapes differ: {list(att_a.shape[1:])} vs {list(att_b.shape[1:])}"
    if len(idx_a) != len(att_a) or len(idx_b) != len(att_b):
        return None, "indices.npy and attributions.npy have different lengths"
    row_b: dict[int, int] = {}
    for j, i in enumerate(np.asarray(idx_b).tolist()):
        row_b.setdefault(int(i), j)
    pairs, seen = [], set()
    for j, i in enumerate(np.asarray(idx_a).tolist()):
        if int(i) in row_b and int(i) not in seen:
            seen.add(int(i))
            pairs.append((j, row_b[int(i)]))
    rhos = [spearman(np.abs(np.asarray(att_a[ja])), np.abs(np.asarray(att_b[jb]))) for ja, jb in pairs]
    defined = [r for r in rhos if r is not None]
    return {"n_matched": len(pairs), "n_defined": len(defined),
            "mean": float(np.mean(defined)) if defined else None,
            "min": float(np.min(defined)) if defined else None}, None


def _attribution(name: str, a: Path, b: Path, ra: dict, rb: dict, refuse: Optional[str]) -> Optional[dict[str, Any]]:
    da, db = a / "arrays" / name, b / "arrays" / name
    has_a, has_b = (da / _MAP).is_file(), (db / _MAP).is_file()
    if not (has_a or has_b):
        return None
    rec: dict[str, Any] = {"compared": False, "reason": None, "shape": None, "spearman": None, "cosine": None,
                           "per_sample": None, "per_sample_reason": None}
    if not (has_a and has_b):
        rec["reason"] = f"{_MAP} only in {'A' if has_a else 'B'}"
    elif refuse:
        rec["reason"] = refuse
    elif ra.get("status") != "ok" or rb.get("status") != "ok":
        rec["reason"] = f"status is {ra.get('status')} in A, {rb.get('status')} in B; maps compared only when both ok"
    else:
        try:
            ma, mb = np.load(da / _MAP), np.load(db / _MAP)
        except (OSError, ValueError) as err:
            rec["reason"] = f"cannot read {_MAP}: {err}"
            return rec
        if ma.shape != mb.shape:
            rec["reason"] = f"mean map shapes differ: {list(ma.shape)} vs {list(mb.shape)}"
            return rec
        rec.update(compared=True, shape=list(ma.shape), spearman=spearman(ma, mb), cosine=cosine(ma, mb))
        rec["per_sample"], rec["per_sample_reason"] = _per_sample(da, db)
    return rec


def _changes(fa: list[str], fb: list[str]) -> dict[str, list[Any]]:
    """Texts only in A / only in B, with the pairs that differ only in their numbers (the same flag or finding with
    another value) reported once as ``changed`` ``{"a", "b"}`` instead of as one gone and one new."""
    only_a, only_b = [f for f in fa if f not in fb], [f for f in fb if f not in fa]
    changed = []
    for f in list(only_a):
        twin = next((g for g in only_b if strip_numbers(g) == strip_numbers(f)), None)
        if twin is not None:
            changed.append({"a": f, "b": twin})
            only_a.remove(f)
            only_b.remove(twin)
    return {"only_a": only_a, "only_b": only_b, "changed": changed}


def _findings(a: Path, sa: dict[str, Any], b: Path, sb: dict[str, Any]) -> dict[str, list[Any]]:
    """Findings (stored, or computed for summaries written before findings existed) only in A, only in B, and
    changed (same kind, diagnostic and text up to its numbers), with their severities."""
    fa, fb = (s.get("findings") if isinstance(s.get("findings"), list) else findings_of(s, d)
              for d, s in ((a, sa), (b, sb)))
    by_a = {finding_key(f): f for f in fa if isinstance(f, dict)}
    by_b = {finding_key(f): f for f in fb if isinstance(f, dict)}
    brief = lambda f: {"kind": f.get("kind"), "severity": f.get("severity"), "text": f.get("text"),  # noqa: E731
                       "diagnostic": f.get("diagnostic")}
    return {"only_a": [brief(f) for k, f in by_a.items() if k not in by_b],
            "only_b": [brief(f) for k, f in by_b.items() if k not in by_a],
            "changed": [{"a": brief(by_a[k]), "b": brief(by_b[k])} for k in by_a
                        if k in by_b and (by_a[k].get("text"), by_a[k].get("severity"))
                        != (by_b[k].get("text"), by_b[k].get("severity"))]}


def _faithfulness(da: dict[str, Any], db: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Which map to believe, A vs B: the recommended method and, per method, verdict and score (delta ``b - a``)."""
    ma, mb = ((d.get("faithfulness") or {}).get("metrics") or {} for d in (da, db))
    if not ma and not mb:
        return None
    pa, pb = ma.get("methods") or {}, mb.get("methods") or {}
    methods = {}
    for name in list(pa) + [n for n in pb if n not in pa]:
        ra, rb = pa.get(name) or {}, pb.get(name) or {}
        sa, sb = ra.get("score"), rb.get("score")
        methods[name] = {"verdict_a": ra.get("verdict"), "verdict_b": rb.get("verdict"), "score_a": sa, "score_b": sb,
                         "score_delta": sb - sa if isinstance(sa, (int, float)) and isinstance(sb, (int, float))
                         else None, "verdict_changed": ra.get("verdict") != rb.get("verdict")}
    return {"recommended_a": ma.get("recommended"), "recommended_b": mb.get("recommended"),
            "recommended_changed": ma.get("recommended") != mb.get("recommended"), "methods": methods}


def _influence(a: Path, b: Path, da: dict[str, Any], db: dict[str, Any]) -> Optional[dict[str, Any]]:
    """How training influence shifts from A to B: the share of the top self-influential training samples both name,
    the rank correlation of self-influence over the same training set, and per studied sample (matched by dataset
    index) the share of its top-k proponents both name."""
    ra, rb = da.get("training_influence") or {}, db.get("training_influence") or {}
    if not ra and not rb:
        return None
    if ra.get("status") != "ok" or rb.get("status") != "ok":
        return {"compared": False, "reason": "training_influence did not run ok in both autopsies"}
    ma, mb = ra.get("metrics") or {}, rb.get("metrics") or {}
    ta, tb = [int(i) for i in ma.get("top_self_influence") or []], [int(i) for i in mb.get("top_self_influence") or []]
    k = min(len(ta), len(tb))
    common = set(ta[:k]) & set(tb[:k])
    res: dict[str, Any] = {
        "compared": True, "reason": None, "mode_a": ma.get("mode"), "mode_b": mb.get("mode"),
        "n_train_a": ma.get("n_train"), "n_train_b": mb.get("n_train"), "top_k": k,
        "top_overlap": len(common) / k if k else None,
        "only_a_top": [i for i in ta[:k] if i not in common], "only_b_top": [i for i in tb[:k] if i not in common],
        "self_influence_spearman": None, "proponent_overlap_mean": None, "samples_compared": 0}
    pa, pb = (d / "arrays" / "training_influence" for d in (a, b))
    try:
        si_a, si_b = np.load(pa / "self_influence.npy"), np.load(pb / "self_influence.npy")
        if si_a.shape == si_b.shape:  # the same training set, positions in its unshuffled order
            res["self_influence_spearman"] = spearman(si_a, si_b)
        prop_a, prop_b = np.load(pa / "proponents.npy"), np.load(pb / "proponents.npy")
        idx_a, idx_b = np.load(pa / "indices.npy"), np.load(pb / "indices.npy")
    except (OSError, ValueError) as err:
        res["reason"] = f"cannot read arrays/training_influence: {err}"
        return res
    row_b = {int(i): j for j, i in enumerate(idx_b.tolist())}
    kp = min(prop_a.shape[1], prop_b.shape[1]) if prop_a.ndim == 2 and prop_b.ndim == 2 else 0
    shares = [len(set(prop_a[j, :kp].tolist()) & set(prop_b[row_b[int(i)], :kp].tolist())) / kp
              for j, i in enumerate(idx_a.tolist()) if int(i) in row_b and kp]
    res["samples_compared"] = len(shares)
    res["proponent_overlap_mean"] = float(np.mean(shares)) if shares else None
    return res


def _side(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    ckpt = s.get("checkpoint") or {}
    return {"folder": str(folder), "checkpoint": {"path": ckpt.get("path"), "sha256": ckpt.get("sha256")},
            "created": s.get("created"), "n_samples": s.get("n_samples"), "target": s.get("target"),
            "status": s.get("status"), "reason": s.get("reason"),
            "input_shape": (s.get("samples") or {}).get("input_shape")}


def compare_autopsies(a: str | Path, b: str | Path, out: str | Path) -> dict[str, Any]:
    """Compare autopsy folders ``a`` and ``b``; write ``out/compare.json`` and ``out/compare.html``; return the dict.

    Raises :class:`CerebroConfigError` when a folder has no readable ``summary.json``.
    """
    a, b, out = Path(a), Path(b), Path(out)
    sa, sb = _load_summary(a), _load_summary(b)
    side_a, side_b = _side(a, sa), _side(b, sb)
    warnings, refuse = [], None
    if side_a["target"] != side_b["target"]:
        warnings.append(f"targets differ: {json.dumps(side_a['target'])} vs {json.dumps(side_b['target'])}")
        refuse = "targets differ"
    if side_a["input_shape"] != side_b["input_shape"]:
        warnings.append(f"input shapes differ: {side_a['input_shape']} vs {side_b['input_shape']}")
        refuse = "input shapes differ" if refuse is None else "targets and input shapes differ"
    if refuse:
        warnings[-1] += "; attribution maps are not compared"
    da, db = sa["diagnostics"], sb["diagnostics"]
    both = [n for n in da if n in db]
    flags = {}
    for name in list(da) + [n for n in db if n not in da]:
        fa, fb = [str(f) for f in (da.get(name) or {}).get("flags") or []], \
                 [str(f) for f in (db.get(name) or {}).get("flags") or []]
        diff = _changes(fa, fb)
        if any(diff.values()):
            flags[name] = diff
    attributions = {}
    for name in both:
        rec = _attribution(name, a, b, da[name], db[name], refuse)
        if rec is not None:
            attributions[name] = rec
    result = {
        "cerebro_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "a": side_a, "b": side_b, "warnings": warnings,
        "diagnostics": {"added": [n for n in db if n not in da], "removed": [n for n in da if n not in db],
                        "status_changes": [{"diagnostic": n, "a": da[n].get("status"), "b": db[n].get("status"),
                                            "reason_b": db[n].get("reason")}
                                           for n in both if da[n].get("status") != db[n].get("status")]},
        "metrics": {n: _metric_rows(da[n].get("metrics"), db[n].get("metrics")) for n in both},
        "flags": flags,
        "findings": _findings(a, sa, b, sb),
        "attributions": attributions,
        "faithfulness": _faithfulness(da, db),
        "training_influence": _influence(a, b, da, db),
    }
    from cerebro.report.compare_html import render  # matplotlib only when a report is written

    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    (out / "compare.html").write_text(render(result, a, b), encoding="utf-8")
    return result


def run_cli(argv: list[str]) -> int:
    """``cerebro-autopsy compare A B [--out DIR]``; returns the exit status (2 on a configuration error).

    ``--out`` defaults to ``<B>/compare_with_<name of A>``: the report lives beside the newer autopsy and says
    which one it was compared with.
    """
    parser = argparse.ArgumentParser(prog="cerebro-autopsy compare",
                                     description="Set two autopsy folders side by side (deltas are B - A).")
    parser.add_argument("a", help="autopsy folder A (the reference)")
    parser.add_argument("b", help="autopsy folder B (compared against A)")
    parser.add_argument("--out", default=None, help="output folder (default: <B>/compare_with_<name of A>)")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.b) / f"compare_with_{Path(args.a).resolve().name or 'A'}")
    try:
        result = compare_autopsies(args.a, args.b, out)
    except CerebroConfigError as err:
        print(f"cerebro-autopsy compare: error: {err}", file=sys.stderr)
        return 2
    for line in result["warnings"]:
        print(f"cerebro-autopsy compare: warning: {line}", file=sys.stderr)
    print(f"cerebro-autopsy compare: report: {Path(out) / 'compare.html'}")
    return 0
