"""report.html in a real browser (headless Chromium): no script errors, every image loads, hostile metadata stays
text, and the page is not blank. Chromium is Debian's ``chromium`` package: installed when possible (root with
apt-get), else the tests skip with the reason."""

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
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("headless Chromium is not available (Debian package `chromium`; apt-get install chromium)")
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
    assert "<script" not in page  # the report runs no code, and the hostile strings are text
    assert html.escape(HOSTILE) in page or html.escape(HOSTILE, quote=False) in page
    probe = tmp_path / "probe.html"  # the same page with a test-only checker run at load
    probe.write_text(page.replace("<head>", "<head>" + _CHECK, 1))
    dom = _run(browser, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["errors"] == [] and check["broken"] == [], check
    assert check["scripts"] == 1  # only the checker: nothing from the metadata became a script
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
