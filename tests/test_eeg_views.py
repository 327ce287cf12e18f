"""EEG views of attribution importance (cerebro.report.eeg): the numbers, what the figures draw, config errors."""

from __future__ import annotations

import io
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from cerebro.errors import CerebroConfigError
from cerebro.report.eeg import EEGInfo, channel_bars, eeg_figures, eeg_importance, time_course, topomap

mne = pytest.importorskip("mne")

MONTAGE = "GSN-HydroCel-129"


@pytest.fixture(scope="module")
def hc129_names() -> list[str]:
    """The montage's own channel names (E1..E128 + Cz), read from the files shipped in the mne wheel (no download)."""
    names = mne.channels.make_standard_montage(MONTAGE).ch_names
    assert len(names) == 129 and names[0] == "E1" and names[-1] == "Cz"
    return names


def _planted(c: int = 12, t: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    m = rng.uniform(0.0, 0.1, size=(c, t))
    m[7] += 1.0  # channel 7 matters everywhere
    m[:, 80:121] += 2.0  # samples 80..120 matter on every channel
    return m


def _png_pixels(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    buf.seek(0)
    return mpimg.imread(buf, format="png")


def test_importance_numbers_match_numpy():
    m = _planted()
    channel, time = eeg_importance(m)  # float64 numpy on both sides: the default rtol 1e-7 holds
    np.testing.assert_allclose(channel, m.mean(axis=1))
    np.testing.assert_allclose(time, m.mean(axis=0))
    assert int(np.argmax(channel)) == 7
    assert set(np.argsort(-time)[:41]) == set(range(80, 121))
    c1, t1 = eeg_importance(m[None])  # a (1, C, T) map gives the same numbers
    np.testing.assert_allclose(c1, channel)
    np.testing.assert_allclose(t1, time)
    with pytest.raises(ValueError, match="shape"):
        eeg_importance(np.zeros((2, 3, 4)))


def test_channel_bars_labels_and_heights():
    imp = np.array([0.3, 0.1, 0.9, 0.0, 0.5])
    names = ["Fp1", "Fz", "Cz", "Pz", "Oz"]
    ax = channel_bars(imp, names, "ig").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names  # input order, not sorted
    np.testing.assert_allclose([p.get_height() for p in ax.patches], imp)
    ax = channel_bars(imp, None, "ig").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]


def test_channel_bars_many_channels_shows_top_30_sorted(hc129_names):
    imp = np.random.default_rng(1).permutation(129).astype(float)
    ax = channel_bars(imp, hc129_names, "ig").axes[0]
    heights = np.array([p.get_height() for p in ax.patches])
    assert heights.size == 30
    np.testing.assert_allclose(heights, np.sort(imp)[::-1][:30])  # the top 30, descending
    assert [t.get_text() for t in ax.get_xticklabels()] == [hc129_names[i] for i in np.argsort(-imp)[:30]]
    assert "top 30 of 129" in ax.get_title()
    ax = channel_bars(imp[:8], None, "ig", top=3).axes[0]  # explicit top on a few channels
    np.testing.assert_allclose([p.get_height() for p in ax.patches], np.sort(imp[:8])[::-1][:3])


def test_time_course_axis_in_seconds():
    imp = np.linspace(0.0, 1.0, 200)
    ax = time_course(imp, 100.0, "ig").axes[0]
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), np.arange(200) / 100.0)
    assert line.get_xdata()[-1] == pytest.approx(1.99)
    np.testing.assert_allclose(line.get_ydata(), imp)
    assert ax.get_xlabel() == "time (s)"
    ax = time_course(imp, None, "ig").axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(200))
    assert ax.get_xlabel() == "time (samples)"
    assert all(float(v).is_integer() for v in ax.get_xticks())  # integer ticks without a sampling rate


def test_topomap_peak_sits_on_the_planted_channel(hc129_names):
    """Plant E55 at 1.0 and every other channel at 0.1. The interpolated image's brightest pixel must lie on E55:
    pixel centres come from the image extent (``imshow`` extent = outer pixel edges), sensor positions from the sensor
    scatter mne draws (the same 2-D coordinates it interpolates from; cross-checked against mne's layout helper).
    Check: the sensor nearest the max pixel is E55 and it is within 2 pixels of E55; HydroCel sensors are several
    pixels apart at mne's default 64x64 resolution, so this is not satisfied by chance."""
    import matplotlib.pyplot as plt
    from matplotlib.contour import ContourSet
    from mne.channels.layout import _find_topomap_coords

    open_before = plt.get_fignums()
    target = hc129_names.index("E55")
    imp = np.full(129, 0.1)
    imp[target] = 1.0
    fig = topomap(imp, hc129_names, MONTAGE, "ig")
    assert plt.get_fignums() == open_before  # nothing went through pyplot
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.get_children())
    assert len(fig.axes) == 2  # the map and its colorbar
    (im,) = ax.images
    arr = np.ma.masked_invalid(im.get_array())
    x0, x1, y0, y1 = im.get_extent()
    assert im.origin == "lower"
    ny, nx = arr.shape
    row, col = np.unravel_index(np.ma.argmax(arr), arr.shape)
    peak = np.array([x0 + (col + 0.5) * (x1 - x0) / nx, y0 + (row + 0.5) * (y1 - y0) / ny])

    (sensors,) = [c for c in ax.collections if len(c.get_offsets()) == 129]
    pos = np.asarray(sensors.get_offsets())
    info = mne.create_info(hc129_names, 100.0, "eeg")
    info.set_montage(MONTAGE)
    np.testing.assert_allclose(pos, _find_topomap_coords(info, None), atol=1e-9)  # float64, the same mne function

    dist = np.linalg.norm(pos - peak, axis=1)
    pixel = (x1 - x0) / nx
    assert int(np.argmin(dist)) == target
    assert dist[target] < 2 * pixel
    spacing = np.sort(np.linalg.norm(pos - pos[target], axis=1))[1]
    assert spacing > 3 * pixel  # the check above discriminates between neighbouring sensors
    assert _png_pixels(fig).std() > 0


def test_eeg_figures_keys_and_png():
    m = _planted(c=8, t=200)
    names = ["Fp1", "Fz", "C3", "Cz", "C4", "Pz", "O1", "O2"]
    figs = eeg_figures(m[None], EEGInfo(names, 100.0, None), "ig")
    assert set(figs) == {"channels", "time"}  # no montage -> no topomap
    np.testing.assert_allclose([p.get_height() for p in figs["channels"].axes[0].patches], m.mean(axis=1))
    np.testing.assert_allclose(figs["time"].axes[0].lines[0].get_ydata(), m.mean(axis=0))
    assert figs["time"].axes[0].lines[0].get_xdata()[-1] == pytest.approx(1.99)
    figs = eeg_figures(m, EEGInfo(names, 100.0, "standard_1020"), "ig")  # old name of colin27_1020: accepted
    assert set(figs) == {"channels", "time", "topomap"}
    for fig in figs.values():
        px = _png_pixels(fig)
        assert px.ndim == 3 and px.std() > 0


def test_check_wrong_count_names_both_numbers():
    with pytest.raises(CerebroConfigError, match=r"5 channel_names .* 8 channels"):
        EEGInfo([f"E{i}" for i in range(1, 6)], None, None).check(8, "ig")
    with pytest.raises(CerebroConfigError, match="sfreq"):
        EEGInfo(None, 0.0, None).check(8, "ig")
    with pytest.raises(CerebroConfigError, match="duplicate"):
        EEGInfo(["E1", "E2", "E1"], None, None).check(3, "ig")
    with pytest.raises(CerebroConfigError, match=r"5 channel_names .* 8 channels"):  # eeg_figures checks first
        eeg_figures(np.ones((8, 10)), EEGInfo([f"E{i}" for i in range(1, 6)]), "ig")


def test_check_misspelled_montage_suggests_nearest():
    # "GSN-HydroCel-128" is itself a real mne montage, so misspell the case instead.
    with pytest.raises(CerebroConfigError, match=r"got 'GSN-Hydrocel-129'\. Did you mean 'GSN-HydroCel-129'\?"):
        EEGInfo(None, None, "GSN-Hydrocel-129").check(129, "ig")


def test_check_lists_names_missing_from_montage(hc129_names):
    EEGInfo(hc129_names, 250.0, MONTAGE).check(129, "ig")  # the montage's own names pass
    # GSN-HydroCel-128 has E1..E128 but no Cz: exactly one missing name, listed.
    with pytest.raises(CerebroConfigError, match=r"1 channel_names are not in montage 'GSN-HydroCel-128': \['Cz'\]"):
        EEGInfo(hc129_names, None, "GSN-HydroCel-128").check(129, "ig")
    bad = ["e1", "Foo", "Bar", "Baz", "Qux", "Quux"] + hc129_names[6:]
    with pytest.raises(CerebroConfigError) as err:
        EEGInfo(bad, None, MONTAGE).check(129, "ig")
    msg = str(err.value)
    assert "6 channel_names" in msg and "['e1', 'Foo', 'Bar', 'Baz', 'Qux'] ..." in msg and "Quux" not in msg
    assert "Did you mean 'E1'?" in msg
    with pytest.raises(CerebroConfigError, match="not in montage"):  # topomap never drops unknown channels
        topomap(np.ones(129), bad, MONTAGE, "ig")
    with pytest.raises(CerebroConfigError, match="needs channel_names"):
        EEGInfo(None, None, MONTAGE).check(129, "ig")


def test_missing_mne_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mne", None)  # `import mne` now raises ImportError
    with pytest.raises(CerebroConfigError, match=r"pip install mne \(the eeg extra of cerebro-autopsy\)"):
        EEGInfo(["E1"], None, MONTAGE).check(1, "ig")
    EEGInfo(["E1"], 100.0, None).check(1, "ig")  # no montage: mne not needed


# -- wired into the autopsy: the `eeg` option of run_autopsy / ModelAutopsy ---------------------------------------
def test_autopsy_draws_named_channels_seconds_and_a_topomap(tmp_path) -> None:
    import mne
    import torch

    from cerebro import run_autopsy
    from tests.models import TinyConv1d

    names = mne.channels.make_standard_montage("GSN-HydroCel-129").ch_names
    x, y = torch.randn(4, 129, 32), torch.randn(4, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    summary = run_autopsy(TinyConv1d(n_chans=129, n_times=32).eval(), loader, output_dir=tmp_path,
                          diagnostics=[{"integrated_gradients": {"n_steps": 4}}],
                          eeg={"channel_names": names, "sfreq": 100, "montage": "GSN-HydroCel-129"})
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok", rec["reason"]
    assert summary["eeg"] == {"channel_names": names, "sfreq": 100, "montage": "GSN-HydroCel-129"}
    channel = np.load(tmp_path / "arrays" / "integrated_gradients" / "channel_importance.npy")
    assert rec["metrics"]["top_channel_names"] == [names[i] for i in np.argsort(-channel)[:10]]
    time = np.load(tmp_path / "arrays" / "integrated_gradients" / "time_importance.npy")
    assert rec["metrics"]["peak_time_s"] == pytest.approx(np.argmax(time) / 100)
    for key in ("topomap", "channels", "time"):
        assert f"figures/integrated_gradients_{key}.png" in rec["artifacts"]
        assert (tmp_path / "figures" / f"integrated_gradients_{key}.png").stat().st_size > 5000


def test_eeg_option_mistakes(tmp_path) -> None:
    import torch

    from cerebro import ModelAutopsy, run_autopsy
    from tests.models import TinyConv1d

    with pytest.raises(CerebroConfigError, match="Did you mean 'GSN-HydroCel-129'"):
        ModelAutopsy(eeg={"channel_names": ["E1"], "montage": "GSN-Hydrocel-129"})
    with pytest.raises(CerebroConfigError, match="eeg option"):
        ModelAutopsy(eeg={"sfrq": 100})
    names_file = tmp_path / "names.txt"
    names_file.write_text("a\nb\nc\n")
    # three names for a four-channel input: reported in the summary, the diagnostics still run with plain views
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4, 32), torch.randn(4, 1)))
    summary = run_autopsy(TinyConv1d().eval(), loader, output_dir=tmp_path / "out", eeg={"channel_names": str(names_file)},
                          diagnostics=[{"integrated_gradients": {"n_steps": 4}}])
    assert summary["eeg"]["error"] == "eeg: 3 channel_names given but the input has 4 channels."
    assert summary["diagnostics"]["integrated_gradients"]["status"] == "ok"
