"""The report's sample explorer in a real browser: the system Chromium driven by Playwright (never a downloaded
browser), headless, on autopsies of an EEG regressor, an image classifier and a token model, each opened from a
copy of its output folder. Sort, filter, select, keyboard, every map drawn (non-blank canvas), no console error,
no horizontal overflow at 1280 px. Skipped with the reason when no Chromium is on PATH or Playwright is missing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import run_autopsy
from tests.models import SmallResNet2d, SubjectWindows, TinyConv1d

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]
NAMES = ["Fz", "Cz", "Pz", "Oz"]


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium on PATH (chromium, chromium-browser or google-chrome); on Debian/Ubuntu: "
                    "apt-get install chromium (.ci/run does so)")
    sync = pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is in the test extra")
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=FLAGS)
        yield browser
        browser.close()


class _TokenModel(nn.Module):
    """Token ids (B, T) -> one score: an embedding, mean over tokens, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(30, 8, padding_idx=0), nn.Linear(8, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(dim=1))


def _copy(src: Path, dst: Path) -> Path:
    """The output folder copied elsewhere (the page must not depend on where it was written)."""
    shutil.copytree(src, dst)
    return dst / "report.html"


@pytest.fixture(scope="module")
def eeg(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eeg") / "autopsy"
    torch.manual_seed(0)
    summary = run_autopsy(TinyConv1d().eval(), DataLoader(SubjectWindows(), batch_size=8), output_dir=out, max_samples=24,
                          diagnostics=["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
                                       "saliency", {"spectral_integrated_gradients": {"n_steps": 8}}],
                          eeg={"channel_names": NAMES, "sfreq": 100.0})
    assert summary["status"] == "ok", summary["diagnostics"]
    return _copy(out, tmp_path_factory.mktemp("eeg_copy") / "moved")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "autopsy"
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 3, 16, 16, generator=g), torch.arange(12) % 4
    torch.manual_seed(0)
    summary = run_autopsy(SmallResNet2d().eval(), DataLoader(TensorDataset(x, y), batch_size=6), output_dir=out,
                          max_samples=12, target="classification",
                          diagnostics=["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
                                       "saliency", "layer_gradcam"])
    assert summary["status"] == "ok", summary["diagnostics"]
    return _copy(out, tmp_path_factory.mktemp("image_copy") / "moved")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokens") / "autopsy"
    g = torch.Generator().manual_seed(2)
    ids, y = torch.randint(1, 30, (8, 10), generator=g), torch.randn(8, 1, generator=g)
    summary = run_autopsy(_TokenModel().eval(), DataLoader(TensorDataset(ids, y), batch_size=4), output_dir=out,
                          max_samples=8, diagnostics=["predictions", {"integrated_gradients": {"n_steps": 8}},
                                                      "saliency"])
    assert summary["status"] == "ok", summary["diagnostics"]
    return _copy(out, tmp_path_factory.mktemp("tokens_copy") / "moved")


class _Page:
    """One opened report with its console errors collected."""

    def __init__(self, browser: Any, report: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(report.as_uri())
        self.page.wait_for_selector("#explorer [data-index]", state="attached")

    def visible(self) -> list[int]:
        return self.page.eval_on_selector_all("#explorer [data-index]", "rs => rs.filter(r => !r.hidden)"
                                              ".map(r => +r.dataset.index)")

    def select(self, i: int) -> None:
        self.page.click(f"#explorer [data-index='{i}']")
        self.wait(i)

    def wait(self, i: int) -> None:
        self.page.wait_for_function(f"() => {{const d = document.getElementById('explorer-detail'); return d && "
                                    f"d.dataset.index === '{i}' && d.querySelector('[data-method] canvas')}}")

    def maps(self) -> dict[str, list[int]]:
        """Per method: [canvas width, non-white pixels, distinct colours] of its drawn map."""
        return self.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
            '#explorer-detail [data-method]')].map(f => { const c = f.querySelector('canvas, img');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let ink = 0; const seen = new Set();
            for (let i = 0; i < d.length; i += 4) { if (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245) ink++;
              if (seen.size < 50) seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]); }
            return [f.dataset.method, [c.width, ink, seen.size]]; }))""")

    def overflow(self) -> list[int]:
        return self.page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def _methods(report: Path) -> list[str]:
    import json

    return json.loads((report.parent / "summary.json").read_text())["explorer"]["methods"]


def _check_maps(p: _Page, methods: list[str]) -> None:
    drawn = p.maps()
    assert sorted(drawn) == sorted(methods), drawn
    for name, (width, ink, colours) in drawn.items():
        assert width > 0 and ink > 100 and colours > 3, (name, drawn)  # a map, not a blank or one-colour box


def test_eeg_explorer_sort_filter_select_keyboard(chromium, eeg: Path) -> None:
    p = _Page(chromium, eeg)
    errors = np.load(eeg.parent / "arrays" / "predictions" / "predictions.npy").reshape(-1) - \
        np.load(eeg.parent / "arrays" / "predictions" / "targets.npy").reshape(-1)
    rows = p.page.eval_on_selector_all("#explorer [data-index]", "rs => rs.map(r => [+r.dataset.index, "
                                       "+r.dataset.error])")
    assert [r[0] for r in rows] == list(range(24))
    np.testing.assert_allclose([r[1] for r in rows], errors, rtol=1e-5, atol=1e-6)  # 6 significant digits kept
    # sort by error: ascending, then descending on a second click
    p.page.click("#explorer-head th:has-text('error')")
    assert p.visible()[0] == int(np.argmin(errors))
    p.page.click("#explorer-head th:has-text('error')")
    assert p.visible()[0] == int(np.argmax(errors))
    # find a sample by index, then a metadata group, then an error range
    p.page.fill("#explorer-filter", "7")
    assert p.visible() == [7]
    p.page.fill("#explorer-filter", "sub-1")
    assert sorted(p.visible()) == [i for i in range(24) if i % 3 == 1]
    p.page.fill("#explorer-filter", "")
    p.page.select_option("#explorer-group", label="subject = sub-2")
    assert sorted(p.visible()) == [i for i in range(24) if i % 3 == 2]
    p.page.select_option("#explorer-group", value="")
    p.page.fill("#explorer-error-min", "0")
    assert sorted(p.visible()) == sorted(int(i) for i in np.flatnonzero(errors >= 0))
    p.page.fill("#explorer-error-min", "")
    # select a sample: every method's map, channel names, findings
    p.select(5)
    _check_maps(p, _methods(eeg))
    assert set(_methods(eeg)) == {"integrated_gradients", "saliency", "spectral_integrated_gradients"}
    text = p.page.inner_text("#explorer-detail")
    assert "sample #5" in text and "subject: sub-2" in text and "rank correlation" in text
    # keyboard: the next / previous rows in the table's current order (sorted by error, descending)
    order = p.visible()
    at = order.index(5)
    p.page.keyboard.press("ArrowDown")
    p.wait(order[at + 1])
    p.page.keyboard.press("j")
    p.wait(order[at + 2])
    p.page.keyboard.press("k")
    p.wait(order[at + 1])
    p.page.keyboard.press("ArrowUp")
    p.wait(5)
    _check_maps(p, _methods(eeg))
    width, client = p.overflow()
    assert width <= client == 1280
    assert p.errors == []
    p.page.close()


def test_image_explorer_class_filter_and_heat_maps(chromium, image: Path) -> None:
    p = _Page(chromium, image)
    pred = np.load(image.parent / "arrays" / "predictions" / "predictions.npy").reshape(-1)
    target = np.load(image.parent / "arrays" / "predictions" / "targets.npy").reshape(-1)
    p.page.select_option("#explorer-class", value="t:2")
    assert p.visible() == [int(i) for i in np.flatnonzero(target == 2)]
    p.page.select_option("#explorer-class", value="wrong")
    assert p.visible() == [int(i) for i in np.flatnonzero(pred != target)]
    p.page.select_option("#explorer-class", value="")
    assert len(p.visible()) == 12
    for i in (0, 11):
        p.select(i)
        _check_maps(p, _methods(image))
    assert set(_methods(image)) == {"integrated_gradients", "saliency", "layer_gradcam"}
    assert p.page.locator("#explorer-detail figure:not([data-method]) canvas").count() == 1  # the input itself
    width, client = p.overflow()
    assert width <= client == 1280
    assert p.errors == []
    p.page.close()


def test_token_explorer_colours_tokens_and_opens_a_linked_sample(chromium, tokens: Path) -> None:
    p = _Page(chromium, tokens)
    p.page.goto(tokens.as_uri() + "#sample=3")  # a link to one sample opens it
    p.page.wait_for_selector("#explorer [data-index]", state="attached")
    p.wait(3)
    _check_maps(p, _methods(tokens))
    assert set(_methods(tokens)) == {"integrated_gradients", "saliency"}
    assert p.page.eval_on_selector("#explorer [data-index='3']", "r => r.classList.contains('selected')")
    width, client = p.overflow()
    assert width <= client == 1280
    assert p.errors == []
    p.page.close()
