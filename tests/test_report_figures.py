"""Every figure right: what the report's figures draw and say, read from the matplotlib figure objects of real
autopsies (the writer's ``save_figure`` is wrapped to keep them) and from their captions, never from pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cerebro import run_autopsy
from cerebro.report.captions import caption
from cerebro.report.figures import bar, heatmap
from cerebro.report.writer import ReportWriter
from tests.models import TinyConv1d

C, T, SFREQ = 4, 64, 50.0


class _Subjects(Dataset):
    """Dict items ``{x, y, subject}`` (regression labels, or ``classes`` integer labels)."""

    def __init__(self, n: int, classes: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, C, T, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g) if classes else torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "subject": i % 3}


def _captured(tmp: Path, model: nn.Module, data: Dataset, **kwargs) -> tuple[dict, dict]:
    figures: dict = {}
    original = ReportWriter.save_figure

    def keep(self, stem, fig):  # noqa: ANN001
        figures[stem] = fig
        return original(self, stem, fig)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReportWriter, "save_figure", keep)
        summary = run_autopsy(model, DataLoader(data, batch_size=8), output_dir=tmp, max_samples=len(data), **kwargs)
    assert summary["status"] == "ok", summary["reason"]
    return summary, figures


@pytest.fixture(scope="module")
def signals(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    torch.manual_seed(0)
    return _captured(tmp_path_factory.mktemp("figs"), TinyConv1d(n_chans=C, n_times=T).eval(), _Subjects(24),
                     diagnostics=["predictions", "activations", "failure_modes",
                                  {"integrated_gradients": {"n_steps": 4}}, {"layer_gradcam": {"layer": "conv2"}}],
                     eeg={"sfreq": SFREQ})


def _main_axes(fig):  # noqa: ANN001, ANN202 - the axes that are not colorbars
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def test_residuals_are_a_histogram_and_the_caption_says_so(signals) -> None:
    _, figs = signals
    (ax,) = _main_axes(figs["predictions_residuals"])
    assert len(ax.patches) == 30 and ax.get_xlabel() == "residual (predicted - true)" and ax.get_ylabel() == "samples"
    assert caption("predictions_residuals").startswith("Histogram of the residuals")
    assert "against label" not in caption("predictions_residuals")


def test_no_empty_chart_when_no_unit_is_zero(signals) -> None:
    summary, figs = signals
    per_layer = summary["diagnostics"]["activations"]["metrics"]["per_layer"]
    assert all(v["zero_fraction"] == 0 for v in per_layer.values())  # ELU: nothing is exactly zero
    (ax,) = figs["activations_zeros"].axes
    assert not ax.patches and not ax.axison
    assert [t.get_text() for t in ax.texts] == [f"fraction of zero outputs per layer: 0 for all {len(per_layer)}."]
    assert "says so in one sentence" in caption("activations_zeros")


def test_channel_time_axes_in_seconds_with_integer_channel_ticks(signals) -> None:
    _, figs = signals
    ax = _main_axes(figs["integrated_gradients_heatmap"])[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "channel"
    assert list(ax.get_yticks()) == list(range(C))  # one tick per channel, never -0.5, 0.5 ...
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(c) for c in range(C)]
    assert ax.get_xlim() == pytest.approx((-0.5 / SFREQ, (T - 0.5) / SFREQ))
    assert _main_axes(figs["integrated_gradients_time"])[0].get_xlabel() == "time (s)"
    assert _main_axes(figs["layer_gradcam_time"])[0].get_xlabel() == "time (s)"


def test_gradcam_sample_is_one_axis_with_the_map_as_a_band_behind_the_signal(signals) -> None:
    _, figs = signals
    (ax,) = _main_axes(figs["layer_gradcam_sample0"])  # no twin axis
    assert ax.get_xlabel() == "time (s)" and "band behind every channel" in ax.get_title(loc="left")
    assert len(ax.lines) == C  # the input's channels as traces
    (band,) = ax.images
    rows = band.get_array()
    assert rows.shape == (C, T) and np.allclose(rows, rows[:1])  # the time-only map, the same behind each channel
    assert "black traces" in caption("layer_gradcam_sample0")


def test_gallery_shows_every_method_over_the_input_of_each_worst_sample(signals) -> None:
    summary, figs = signals
    items = summary["gallery"]
    assert len(items) == 3 and all(it["figures"] == [f"figures/gallery_worst{it['rank']}.png"] for it in items)
    fig = figs["gallery_worst0"]
    panels = _main_axes(fig)
    assert [a.get_title(loc="left").split(" ")[0] for a in panels] == ["integrated_gradients", "layer_gradcam"]
    assert all(len(a.lines) == C and a.get_ylabel() == "channel" for a in panels)
    assert fig.get_size_inches()[0] >= 10  # readable: the page shows it at full width
    assert f"sample {items[0]['index']}" in fig._suptitle.get_text()
    assert items[0]["agreement"][0]["methods"] == ["integrated_gradients", "layer_gradcam"]
    assert "every method's map over its input" in caption("gallery_worst0")


def test_failure_groups_are_named_after_the_metadata_field(signals) -> None:
    summary, figs = signals
    ax = figs["failure_modes_by_subject"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]


def test_confusion_matrix_labels_every_class(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * T, 10)).eval()
    _, figs = _captured(tmp_path, model, _Subjects(40, classes=10), diagnostics=["predictions"],
                        target="classification")
    ax = _main_axes(figs["predictions_confusion"])[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(10)]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(10)]
    assert len(ax.texts) == 100 and sum(int(t.get_text()) for t in ax.texts) == 40  # counts in the cells
    assert ax.get_ylabel() == "true class" and "sample counts" in caption("predictions_confusion")


def test_helpers_label_axes() -> None:
    ax = _main_axes(heatmap(np.ones((3, 200)), "m", "time (samples)", "channel", sfreq=100.0,
                            row_labels=["Fz", "Cz", "Pz"]))[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Fz", "Cz", "Pz"] and ax.get_xlabel() == "time (s)"
    ax = _main_axes(heatmap(np.ones((60, 70)), "m", "x", "y"))[0]
    assert all(float(v).is_integer() for v in list(ax.get_xticks()) + list(ax.get_yticks()))
    fig = bar(["a", "b"], [0.0, 0.0], "dead units", "fraction", empty="No layer has dead units.")
    assert [t.get_text() for t in fig.axes[0].texts] == ["No layer has dead units."] and not fig.axes[0].patches
    assert len(bar(["a", "b"], [0.0, 0.5], "dead units", "fraction").axes[0].patches) == 2
