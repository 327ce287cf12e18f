"""The sample explorer's files (no browser): what ``explorer/index.js`` and ``explorer/maps_<k>.js`` hold, that the
quantised maps decode to the stored maps, that report.html does not grow with the sample count, and the summary
object ``run_autopsy`` returns (a dict that renders itself in Jupyter) and :func:`cerebro.load_autopsy`."""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cerebro
from cerebro.errors import CerebroConfigError
from cerebro.report.explorer import map_kind, quantise_input, quantise_map
from cerebro.report.progress import in_notebook, progress_for
from tests.models import SubjectWindows, TinyConv1d

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
DIAGS = ["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}}, "saliency", "faithfulness"]


def _run(out: Path, n: int, diagnostics: list = DIAGS) -> cerebro.AutopsySummary:
    torch.manual_seed(0)
    return cerebro.run_autopsy(TinyConv1d().eval(), DataLoader(SubjectWindows(n), batch_size=16), output_dir=out,
                               max_samples=n, diagnostics=diagnostics, eeg={"sfreq": 100.0})


def _js(path: Path, call: str) -> dict:
    text = path.read_text()
    assert text.startswith(f"CerebroExplorer.{call}(") and text.rstrip().endswith(");")
    return json.loads(text[len(f"CerebroExplorer.{call}("): text.rstrip().rindex(")")])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, cerebro.AutopsySummary]:
    out = tmp_path_factory.mktemp("explorer") / "autopsy"
    return out, _run(out, 20)


def test_quantised_maps_and_inputs_round_trip_within_one_step() -> None:
    v = np.array([[-2.0, 0.0, 0.5], [1.0, np.nan, 2.0]])
    q, scale = quantise_map(v)
    assert scale == 2.0 and q.dtype == np.uint8 and q[1, 1] == 0 and q[0, 1] == 128
    back = (q.astype(np.float64) - 128) / 127 * scale
    ok = np.isfinite(v)
    np.testing.assert_allclose(back[ok], v[ok], atol=scale / 127 / 2 + 1e-12)  # half a quantisation step
    assert quantise_map(np.zeros(5))[1] == 0.0 and (quantise_map(np.zeros(5))[0] == 128).all()
    x = np.linspace(-3, 5, 11)
    qx, lo, hi = quantise_input(x)
    np.testing.assert_allclose(lo + qx / 255 * (hi - lo), x, atol=(hi - lo) / 255 / 2 + 1e-12)


def test_map_kinds_follow_the_input_and_the_map() -> None:
    assert map_kind("float", (4, 32), (4, 32), False) == "signal"
    assert map_kind("float", (4, 32), (1, 32), False) == "signal"  # a time-only layer map
    assert map_kind("float", (4, 32), (4, 17), True) == "spectral"
    assert map_kind("float", (3, 8, 8), (1, 8, 8), False) == "image"
    assert map_kind("token_ids", (12,), (12,), False) == "tokens"
    assert map_kind("float", (10,), (10,), False) == "bars"


def test_index_rows_and_chunks_hold_every_sample(run) -> None:
    out, summary = run
    info = summary["explorer"]
    assert info["n_samples"] == 20 and info["methods"] == ["integrated_gradients", "saliency"]
    index = _js(out / "explorer" / "index.js", "index")
    assert [c["key"] for c in index["columns"]] == [
        "position", "index", "target", "prediction", "error", "meta:subject", "faith:integrated_gradients",
        "faith:saliency", "conv:integrated_gradients"]
    rows = np.array([[r[0], r[1], r[2], r[3], r[4]] for r in index["rows"]], dtype=np.float64)
    arrays = out / "arrays"
    pred, target = np.load(arrays / "predictions" / "predictions.npy"), np.load(arrays / "predictions" / "targets.npy")
    assert rows[:, 0].tolist() == list(range(20)) and rows[:, 1].tolist() == np.load(
        arrays / "predictions" / "indices.npy").tolist()
    np.testing.assert_allclose(rows[:, 2], target.reshape(-1), rtol=1e-5)  # 6 significant digits
    np.testing.assert_allclose(rows[:, 4], (pred - target).reshape(-1), rtol=1e-5, atol=1e-6)
    assert [r[5] for r in index["rows"]] == [f"sub-{i % 3}" for i in range(20)]
    faith = np.array([r[6] for r in index["rows"]], dtype=np.float64)
    assert np.all(np.abs(faith) <= 1)  # in units of twice the curves' range
    # the largest per-sample convergence error is the diagnostic's own max_relative_delta
    rel = np.array([r[8] for r in index["rows"]])
    ig = summary["diagnostics"]["integrated_gradients"]["metrics"]
    assert np.isclose(np.max(rel), ig["max_relative_delta"], rtol=1e-2)  # 3 significant digits kept
    chunk = _js(out / "explorer" / "maps_000.js", "chunk")
    assert chunk["start"] == 0 and len(chunk["samples"]) == 20
    stored = np.load(arrays / "saliency" / "attributions.npy")
    for i in (0, 13):
        code, scale, shape = chunk["samples"][i]["maps"]["saliency"]
        q = np.frombuffer(base64.b64decode(code), dtype=np.uint8).reshape(shape)
        np.testing.assert_allclose((q.astype(np.float64) - 128) / 127 * scale, stored[i], atol=scale / 254 + 1e-9)


def test_report_html_does_not_grow_with_the_sample_count(run, tmp_path: Path) -> None:
    out, _ = run
    big = _run(tmp_path / "big", 50, ["predictions", "failure_modes", "saliency"])
    small = _run(tmp_path / "small", 20, ["predictions", "failure_modes", "saliency"])
    page = (tmp_path / "big" / "report.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == [f"<script src='explorer/{n}'>" for n in
                                                   ("explorer_draw.js", "explorer.js", "index.js")]
    assert "id='explorer'" in page and "id='explorer-filter'" in page and "id='explorer-detail'" in page
    growth = (big["explorer"]["index_bytes"] - small["explorer"]["index_bytes"]) / 30
    assert 0 < growth < 200, growth  # bytes of index.js per added sample (the table row)
    # the page itself differs only by numbers and figures, not by rows: no per-sample markup
    assert "data-index" not in page


def test_summary_is_the_same_dict_and_renders_itself(run) -> None:
    out, summary = run
    on_disk = json.loads((out / "summary.json").read_text())
    assert isinstance(summary, dict) and type(summary) is cerebro.AutopsySummary
    assert json.loads(json.dumps(summary)) == on_disk and summary == on_disk and list(summary) == list(on_disk)
    assert pickle.loads(pickle.dumps(summary)) == summary
    html = summary._repr_html_()
    assert "cerebro autopsy: " in html and "Findings" in html and "Diagnostics at a glance" in html
    assert html.count("data:image/png;base64,") >= 1 and "report.html" in html
    for f in summary["findings"]:
        assert f["text"].replace("'", "&#x27;").split(" ")[0] in html
    loaded = cerebro.load_autopsy(out)
    assert type(loaded) is cerebro.AutopsySummary and loaded == summary and loaded.output_dir == out
    assert loaded._repr_html_() == html
    with pytest.raises(CerebroConfigError, match="no summary.json"):
        cerebro.load_autopsy(out / "figures")


def test_progress_is_silent_when_the_output_is_not_interactive() -> None:
    assert not in_notebook()  # pytest is no Jupyter kernel
    assert progress_for(None, None, io.StringIO()) is None
    assert progress_for(None, True, io.StringIO()) == "tqdm"


def test_spilled_samples_give_the_same_explorer_inputs(run, tmp_path: Path, monkeypatch) -> None:
    """Inputs read back from the spill file (large runs) are quantised like inputs held in memory."""
    import cerebro.samples as samples_mod

    out, _ = run
    real = samples_mod.collect_samples
    monkeypatch.setattr("cerebro.runner.prepare.collect_samples", lambda *a, **k: real(*a, **{**k, "spill_bytes": 0}))
    spilled = _run(tmp_path / "spilled", 20, ["predictions", "saliency"])
    assert spilled["explorer"]["n_samples"] == 20
    a, b = (_js(o / "explorer" / "maps_000.js", "chunk")["samples"] for o in (out, tmp_path / "spilled"))
    assert [s["x"] for s in a] == [s["x"] for s in b] and [s["lo"] for s in a] == [s["lo"] for s in b]


def test_convergence_per_sample_reads_the_map_criterion(tmp_path: Path) -> None:
    """converged.npy (completeness and the map's estimated error) reaches the explorer: a sample complete within
    tolerance whose map did not converge is told apart from one whose completeness misses."""
    from cerebro.report.explorer_stats import convergence_per_sample

    folder = tmp_path / "arrays" / "integrated_gradients"
    folder.mkdir(parents=True)
    np.save(folder / "convergence_delta.npy", np.array([0.001, 0.05, 0.002]))
    np.save(folder / "gap.npy", np.array([1.0, 1.0, 1.0]))
    np.save(folder / "converged.npy", np.array([True, False, False]))
    conv = convergence_per_sample({}, tmp_path, 3, ["integrated_gradients"])["integrated_gradients"]
    assert conv["converged"] == [True, False, True]  # completeness within 1%
    assert conv["map_converged"] == [True, False, False]  # sample 2: complete, map still moving
    np.save(folder / "converged.npy", np.array([True, True]))  # wrong length (another run): ignored
    assert convergence_per_sample({}, tmp_path, 3, ["integrated_gradients"])["integrated_gradients"][
        "map_converged"] == [True, True, True]
