"""``cerebro-autopsy compare``: deltas, attribution similarity, flags, status changes, a safe self-contained page."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from cerebro import CerebroConfigError
from cerebro.compare import compare_autopsies, run_cli, spearman
from tests.autopsy_helpers import autopsy, load_summary
from tests.models import TinyConv1d

DIAGS = ["predictions", "integrated_gradients"]
IG = "integrated_gradients"
HOSTILE = "<script>alert(1)</script>"


def _model(seed: int) -> TinyConv1d:
    torch.manual_seed(seed)
    return TinyConv1d(n_chans=4, n_times=32).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real autopsies of the same 8 samples: two TinyConv1d models with different seeds."""
    root = tmp_path_factory.mktemp("compare")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, 32, generator=g), torch.randn(8, 1, generator=g)
    for name, seed in (("a", 0), ("b", 1)):
        summary = autopsy(_model(seed), (x, y), root / name, DIAGS, device="cpu")
        assert summary["status"] == "ok", summary["reason"]
    return root / "a", root / "b"


def _copy_and_edit(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    summary = load_summary(dst)
    edit(summary)
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def test_folder_with_itself(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = folders
    r = compare_autopsies(a, a, tmp_path / "out")
    assert json.loads((tmp_path / "out/compare.json").read_text()) == r
    assert (tmp_path / "out/compare.html").is_file()
    rows = [row for rows in r["metrics"].values() for row in rows]
    assert any(row["metric"] == "rmse" for row in r["metrics"]["predictions"])
    assert rows and all(row["delta"] == 0 and row["relative"] == 0 for row in rows)
    assert r["flags"] == {} and r["warnings"] == []
    assert r["diagnostics"] == {"added": [], "removed": [], "status_changes": []}
    ig = r["attributions"][IG]
    assert ig["compared"] and ig["reason"] is None
    assert abs(ig["spearman"] - 1) < 1e-9 and abs(ig["cosine"] - 1) < 1e-9
    ps = ig["per_sample"]
    assert ps["n_matched"] == 8 and abs(ps["mean"] - 1) < 1e-9 and abs(ps["min"] - 1) < 1e-9
    assert r["a"]["checkpoint"] == r["b"]["checkpoint"] and r["a"]["n_samples"] == 8


def test_two_models(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    r = compare_autopsies(a, b, tmp_path / "out")
    sa, sb = load_summary(a), load_summary(b)
    rmse = next(row for row in r["metrics"]["predictions"] if row["metric"] == "rmse")
    ra, rb = sa["diagnostics"]["predictions"]["metrics"]["rmse"], sb["diagnostics"]["predictions"]["metrics"]["rmse"]
    assert (rmse["a"], rmse["b"], rmse["delta"]) == (ra, rb, rb - ra) and rmse["delta"] != 0
    assert rmse["relative"] == pytest.approx((rb - ra) / abs(ra), rel=1e-12)  # float64 arithmetic on the same values

    ma, mb = (np.load(d / "arrays" / IG / "mean_abs_attribution.npy") for d in (a, b))
    ig = r["attributions"][IG]
    assert ig["shape"] == list(ma.shape)
    assert abs(ig["spearman"] - spearmanr(ma.ravel(), mb.ravel()).statistic) < 1e-9
    cos = float(ma.ravel() @ mb.ravel() / np.linalg.norm(ma) / np.linalg.norm(mb))
    assert abs(ig["cosine"] - cos) < 1e-9 and ig["spearman"] < 1 - 1e-6
    # per-sample: rows matched by dataset index (B's rows reversed would still match)
    att_a, att_b = (np.load(d / "arrays" / IG / "attributions.npy") for d in (a, b))
    idx_a, idx_b = (np.load(d / "arrays" / IG / "indices.npy") for d in (a, b))
    row_b = {int(i): j for j, i in enumerate(idx_b)}
    rhos = [spearmanr(np.abs(att_a[j]).ravel(), np.abs(att_b[row_b[int(i)]]).ravel()).statistic
            for j, i in enumerate(idx_a)]
    ps = ig["per_sample"]
    assert ps["n_matched"] == 8 and ps["n_defined"] == 8
    assert abs(ps["mean"] - np.mean(rhos)) < 1e-9 and abs(ps["min"] - np.min(rhos)) < 1e-9
    # average ranks for ties, as scipy
    u, v = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 0.5]), np.array([2.0, 1.0, 1.0, 5.0, 4.0, 4.0])
    assert abs(spearman(u, v) - spearmanr(u, v).statistic) < 1e-12


def test_status_change_flags_and_refused_maps(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders

    def fault(s: dict) -> None:
        s["diagnostics"]["predictions"].update(status="failed", reason="RuntimeError: injected")
        s["diagnostics"][IG]["flags"].append("only in B: maps look odd")
        s["diagnostics"]["extra_diag"] = {"status": "ok", "reason": None, "seconds": 0.0, "metrics": {},
                                          "flags": [], "artifacts": []}

    r = compare_autopsies(a, _copy_and_edit(b, tmp_path / "b_fault", fault), tmp_path / "out")
    assert r["diagnostics"]["status_changes"] == [{"diagnostic": "predictions", "a": "ok", "b": "failed",
                                                   "reason_b": "RuntimeError: injected"}]
    assert r["diagnostics"]["added"] == ["extra_diag"] and r["diagnostics"]["removed"] == []
    assert r["flags"] == {IG: {"only_a": [], "only_b": ["only in B: maps look odd"], "changed": []}}
    html = (tmp_path / "out/compare.html").read_text()
    assert "only in B: maps look odd" in html and "extra_diag" in html

    def reshape(s: dict) -> None:
        s["samples"]["input_shape"] = [4, 64]

    r = compare_autopsies(a, _copy_and_edit(b, tmp_path / "b_shape", reshape), tmp_path / "out2")
    assert any("input shapes differ" in w for w in r["warnings"])
    assert not r["attributions"][IG]["compared"] and r["attributions"][IG]["reason"] == "input shapes differ"
    assert r["attributions"][IG]["spearman"] is None


def test_html_escaped_and_self_contained(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders

    def hostile(s: dict) -> None:
        s["checkpoint"]["path"] = HOSTILE
        s["diagnostics"][IG]["flags"].append(HOSTILE)

    compare_autopsies(a, _copy_and_edit(b, tmp_path / "b_hostile", hostile), tmp_path / "out")
    html = (tmp_path / "out/compare.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I) and "@import" not in html
    srcs = re.findall(r"<img\b[^>]*\bsrc\s*=\s*['\"]([^'\"]*)['\"]", html)
    assert len(srcs) == html.count("<img") == 2  # A and B mean maps of integrated_gradients
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG")


def test_missing_summary_and_default_out(folders: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    a, b = folders
    with pytest.raises(CerebroConfigError, match=re.escape(str(tmp_path / "nowhere"))):
        compare_autopsies(tmp_path / "nowhere", b, tmp_path / "out")
    b_copy = shutil.copytree(b, tmp_path / "b_copy")
    assert run_cli([str(a), str(b_copy)]) == 0
    assert (b_copy / "compare_with_a" / "compare.html").is_file()
    assert str(b_copy / "compare_with_a" / "compare.html") in capsys.readouterr().out


def _cli(*args: str) -> subprocess.Popen:
    code = f"import sys; sys.argv={['cerebro-autopsy', 'compare', *args]!r}; from cerebro.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])


def test_cli(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    out, missing = tmp_path / "cli_out", tmp_path / "no_such_autopsy"
    runs = [_cli(str(a), str(b), "--out", str(out)), _cli(str(missing), str(b), "--out", str(tmp_path / "x"))]
    (ok_out, ok_err), (bad_out, bad_err) = (p.communicate(timeout=120) for p in runs)  # both start at once
    assert runs[0].returncode == 0, ok_err
    assert (out / "compare.json").is_file() and (out / "compare.html").is_file()
    assert str(out / "compare.html") in ok_out
    assert runs[1].returncode == 2
    assert str(missing) in bad_err and "Traceback" not in bad_err and not (tmp_path / "x").exists()


def test_same_flag_with_another_number_is_changed_not_two_flags(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """A flag or finding whose text differs only in its numbers is one "changed" row; engine internals (chunk sizes,
    calibration speeds) are no metric deltas."""
    a, b = folders

    def flag(value: float, seconds: float):
        def edit(s: dict) -> None:
            s["diagnostics"][IG]["flags"].append(f"IG not converged on {value}/8 samples (|delta| > 5%)")
            s["diagnostics"][IG]["metrics"].update(chunk_points=512 * value, calibration_points_per_s={"4": seconds})
            s["findings"] = [{"kind": "failing_group", "severity": "warning", "diagnostic": "failure_modes",
                              "text": f"subject = 3 fails: mean error {value / 10} vs 0.1", "evidence": {}}]
        return edit

    fa = _copy_and_edit(a, tmp_path / "a_flag", flag(2, 7.5))
    fb = _copy_and_edit(a, tmp_path / "b_flag", flag(5, 9.25))
    r = compare_autopsies(fa, fb, tmp_path / "out")
    assert r["flags"] == {IG: {"only_a": [], "only_b": [], "changed": [
        {"a": "IG not converged on 2/8 samples (|delta| > 5%)", "b": "IG not converged on 5/8 samples (|delta| > 5%)"}]}}
    assert r["findings"]["changed"][0]["a"]["text"] == "subject = 3 fails: mean error 0.2 vs 0.1"
    assert r["findings"]["changed"][0]["b"]["text"] == "subject = 3 fails: mean error 0.5 vs 0.1"
    assert r["findings"]["only_a"] == r["findings"]["only_b"] == []
    metrics = [row["metric"] for row in r["metrics"][IG]]
    assert "mean_abs_delta" in metrics
    assert not any("chunk_points" in m or "calibration" in m for m in metrics)
    html = (tmp_path / "out/compare.html").read_text()
    assert "changed (A → B)" in html and html.count("IG not converged on") == 2  # one row: A &rarr; B


def test_findings_computed_for_old_summaries(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders

    def old(s: dict) -> None:
        s.pop("findings", None)
        s["diagnostics"]["predictions"]["metrics"]["rmse"] = 10 * s["diagnostics"]["predictions"]["metrics"][
            "mean_predictor_rmse"]

    r = compare_autopsies(a, _copy_and_edit(a, tmp_path / "a_old", old), tmp_path / "out")
    in_b = r["findings"]["only_b"] + [c["b"] for c in r["findings"]["changed"]]
    quality = [f for f in in_b if f["kind"] == "model_quality"]
    assert quality and quality[0]["severity"] == "problem" and "no better than" in quality[0]["text"], r["findings"]
