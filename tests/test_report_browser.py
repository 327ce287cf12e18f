"""report.html in a real browser (headless Chromium): no script errors, every image loads, hostile metadata stays
text, and the page is not blank. The tests run when a Chromium is on PATH (CI's ``.ci/run`` installs Debian's
``chromium`` package) and skip with the reason otherwise: a test never installs system packages."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cerebro import run_autopsy
from tests.models import TinyConv1d

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def browser() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium on PATH (chromium, chromium-browser or google-chrome); on Debian/Ubuntu: "
                    "apt-get install chromium (.ci/run does so)")
    return path


class _Hostile(Dataset):
    """Dict batches whose metadata strings are HTML and script."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(12, 4, 32, generator=g), torch.randn(12, 1, generator=g)

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "subject": HOSTILE if i % 2 else f"s{i}&'\""}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    summary = run_autopsy(TinyConv1d().eval(), DataLoader(_Hostile(), batch_size=4), output_dir=out, max_samples=12,
                          diagnostics=["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
                                       "saliency", {"sanity_checks": {"samples": 4}}])
    assert summary["status"] == "ok" and summary["gallery"]
    return out / "report.html"


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


_CHECK = """<script>window.__errors=[];addEventListener('error',e=>__errors.push(String(e.message||
(e.target&&e.target.alt)||'error')),true);const ce=console.error;console.error=(...a)=>{__errors.push(a.join(' '));
ce(...a)};addEventListener('load',()=>{const i=[...document.images];document.body.setAttribute('data-check',
JSON.stringify({images:i.length,broken:i.filter(m=>!(m.complete&&m.naturalWidth>0)).map(m=>m.alt),
errors:__errors,scripts:document.scripts.length,text:document.body.innerText.includes('alert(2)')}))})</script>"""


def test_report_loads_cleanly_in_chromium(browser: str, report: Path, tmp_path: Path) -> None:
    page = report.read_text()
    # the report's only code is the sample explorer's, loaded from explorer/; the hostile strings are text
    assert re.findall(r"<script[^>]*>", page) == [f"<script src='explorer/{n}'>" for n in
                                                   ("explorer_draw.js", "explorer.js", "index.js")]
    assert html.escape(HOSTILE) in page or html.escape(HOSTILE, quote=False) in page
    probe = report.parent / "probe.html"  # the same page with a test-only checker run at load, beside explorer/
    probe.write_text(page.replace("<head>", "<head>" + _CHECK, 1))
    dom = _run(browser, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["errors"] == [] and check["broken"] == [], check
    assert check["scripts"] == 4  # the checker and the explorer's 3: nothing from the metadata became a script
    assert check["images"] == page.count("<img ") and check["images"] >= 15
    assert check["text"] is True  # the hostile string is shown as text


def test_report_screenshot_is_not_blank(browser: str, report: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    _run(browser, "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri())
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.05 and pixels.std() > 0.05  # text, tables and figures drawn
    if os.environ.get("CEREBRO_SCREENSHOT_DIR"):  # README screenshots are made by this test
        shutil.copy(shot, Path(os.environ["CEREBRO_SCREENSHOT_DIR"]) / "report.png")
    assert np.isfinite(pixels).all()


_LAYOUT = """<script>addEventListener('load',()=>{const d=document.documentElement,i=[...document.images];
const head=document.querySelector('table.head');document.body.setAttribute('data-layout',JSON.stringify({
width:innerWidth,scroll:d.scrollWidth,client:d.clientWidth,findings:document.querySelectorAll('ul.findings li').length,
severities:[...document.querySelectorAll('ul.findings li')].map(l=>l.className),pre:document.querySelectorAll('pre').length,
images:i.length,broken:i.filter(m=>!(m.complete&&m.naturalWidth>0)).length,
wide:[...document.querySelectorAll('body *')].filter(e=>e.getBoundingClientRect().right>innerWidth+1&&!e.closest('.wrap')).map(e=>e.tagName).slice(0,5),
head:head?head.getBoundingClientRect().right:null,h1:document.querySelector('h1').innerText}))})</script>"""


def _layout(browser: str, page: str, tmp_path: Path, width: int = 1280) -> dict:
    probe = tmp_path / "layout.html"
    probe.write_text(page.replace("<head>", "<head>" + _LAYOUT, 1))
    dom = _run(browser, f"--window-size={width},900", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_report_structure_at_1280_px(browser: str, report: Path, tmp_path: Path) -> None:
    """Findings first, tables instead of JSON, every image loaded, nothing wider than a 1280 px laptop screen."""
    page = report.read_text()
    summary = json.loads((report.parent / "summary.json").read_text())
    layout = _layout(browser, page, tmp_path)
    assert layout["width"] == 1280 and layout["scroll"] <= layout["client"], layout  # no horizontal scrolling
    assert layout["wide"] == [], layout
    assert layout["findings"] == len(summary["findings"]) >= 3
    assert layout["pre"] == 0 and "<pre" not in page  # no JSON dumps
    assert layout["images"] == page.count("<img ") >= 10 and layout["broken"] == 0
    assert page.index("id='findings'") < page.index("id='glance'") < page.index("id='run-details'")
    severities = {f["severity"] for f in summary["findings"]}
    expected = "ok, with warnings" if severities & {"warning", "problem"} else "ok"
    assert layout["h1"] == f"cerebro autopsy: {expected}"
    for key in ("calibration_points_per_s", "chunk_points"):  # engine internals only under run details
        if key in page:
            assert page.index(key) > page.index("id='run-details'")


def test_compare_page_header_fits_and_changed_flags(browser: str, report: Path, tmp_path: Path) -> None:
    """compare.html at 1280 px: a long checkpoint path and sha256 wrap inside the header; a flag whose number
    changed is one "changed" row."""
    from cerebro.compare import compare_autopsies

    a = report.parent
    b = tmp_path / "b"
    shutil.copytree(a, b)
    s = json.loads((b / "summary.json").read_text())
    s["checkpoint"]["path"] = "/very/long/" + "checkpoint_directory_name_without_breaks_" * 8 + "best.ckpt"
    s["checkpoint"]["sha256"] = "f" * 64
    s["diagnostics"]["predictions"]["flags"].append("non-finite predictions or labels: 3 of 12 samples")
    (b / "summary.json").write_text(json.dumps(s))
    sa = json.loads((a / "summary.json").read_text())
    sa["diagnostics"]["predictions"]["flags"].append("non-finite predictions or labels: 1 of 12 samples")
    (tmp_path / "a").mkdir()
    shutil.copytree(a / "arrays", tmp_path / "a" / "arrays")
    (tmp_path / "a" / "summary.json").write_text(json.dumps(sa))
    result = compare_autopsies(tmp_path / "a", b, tmp_path / "out")
    assert result["flags"]["predictions"]["changed"] == [{"a": "non-finite predictions or labels: 1 of 12 samples",
                                                          "b": "non-finite predictions or labels: 3 of 12 samples"}]
    page = (tmp_path / "out" / "compare.html").read_text()
    layout = _layout(browser, page, tmp_path)
    assert layout["scroll"] <= layout["client"] and layout["head"] <= 1280, layout
    assert layout["pre"] == 0 and layout["broken"] == 0
