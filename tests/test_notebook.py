"""examples/autopsy_demo.ipynb executed by a real Jupyter kernel (nbclient): it trains the demo model, runs the
autopsy, and the returned summary renders itself (status, findings, the at-a-glance table, a figure); the progress
bar is a notebook widget there. Skipped with the reason when nbclient / ipykernel are not installed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extra")
pytest.importorskip("ipykernel", reason="ipykernel is in the test extra")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "autopsy_demo.ipynb"


def _outputs(cell) -> list[dict]:  # noqa: ANN001
    return [o for o in cell.get("outputs", [])]


def test_demo_notebook_runs_and_the_summary_renders_itself(tmp_path: Path) -> None:
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    env = {"CEREBRO_TEST_THREADS": os.environ.get("CEREBRO_TEST_THREADS", "1"), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment (PYTHONPATH included)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    errors = [o for c in nb.cells for o in _outputs(c) if o.get("output_type") == "error"]
    assert errors == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    run_cell = code[1]
    html = [o["data"]["text/html"] for o in _outputs(run_cell) if "text/html" in o.get("data", {})]
    assert len(html) == 1, _outputs(run_cell)
    page = html[0]
    assert "cerebro autopsy: " in page and "Findings" in page and "Diagnostics at a glance" in page
    for name in ("predictions", "failure_modes", "integrated_gradients", "saliency"):
        assert f">{name}</a>" in page
    assert "data:image/png;base64," in page and "report.html" in page
    # the progress bar is a notebook widget, one step per diagnostic
    widgets = [o for o in _outputs(run_cell) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    plain = " ".join(o["data"].get("text/plain", "") for o in widgets)
    assert widgets and "cerebro autopsy" in plain and "/4 " in plain, _outputs(run_cell)
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    bars = [m["state"] for m in state.values() if m.get("model_name") in ("FloatProgressModel", "IntProgressModel")]
    assert {"value": 4, "max": 4} in [{"value": b.get("value"), "max": b.get("max")} for b in bars], bars
    # still the summary mapping; load_autopsy gives the same object back, rendered the same way
    printed = "".join(o.get("text", "") for o in _outputs(code[2]))
    assert printed.startswith(("ok ", "partial ")) and "32" in printed
    assert any("text/html" in o.get("data", {}) for o in _outputs(code[3]))
    assert (tmp_path / "autopsy_demo_notebook" / "report.html").is_file()
    assert (tmp_path / "autopsy_demo_notebook" / "explorer" / "index.js").is_file()
