"""``spectral_integrated_gradients``: the transform, agreement with Captum on the composed model, planted rhythms
(a model trained to read 10 Hz power on two channels next to a 20 Hz distractor), a planted 50 Hz artefact, the
time-frequency option, single-channel inputs, and the demo (Hydra config, Lightning Trainer, the callback)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from cerebro.diagnostics.spectral_integrated_gradients import (DEFAULT_BANDS, SpectralIntegratedGradients,
                                                                  confound_shares)
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.spectral import Fourier, ShortTimeFourier, spectral_integrated_gradients
from cerebro.errors import CerebroConfigError
from cerebro.report.captions import caption
from tests.autopsy_helpers import autopsy, load_array

NAME = "spectral_integrated_gradients"
SFREQ, C, T = 128.0, 8, 128  # 1 Hz bins
PLANTED, DISTRACTOR = (0, 1), (4, 5)
NAMES = ["O1", "O2", "Pz", "Cz", "C3", "C4", "Fz", "Oz"]  # 10-20 positions for the topomaps


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models train faster on one thread when other processes share the cores (results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(n: int, freq: float, chans: tuple[int, ...], other: float, other_chans: tuple[int, ...], seed: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise windows; ``y`` is the power of a ``freq`` sinusoid (random amplitude and phase) on ``chans``, while a
    ``other`` Hz sinusoid of independent random amplitude sits on ``other_chans``."""
    g = np.random.default_rng(seed)
    t = np.arange(T) / SFREQ
    x = 0.5 * g.standard_normal((n, C, T))
    a, b = g.uniform(0, 2, n), g.uniform(0, 2, n)
    for c in chans:
        x[:, c] += a[:, None] * np.sin(2 * np.pi * freq * t[None] + g.uniform(0, 2 * np.pi, (n, 1)))
    for c in other_chans:
        x[:, c] += b[:, None] * np.sin(2 * np.pi * other * t[None] + g.uniform(0, 2 * np.pi, (n, 1)))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(a**2, dtype=torch.float32)[:, None]


class PowerNet(nn.Module):
    """Temporal filters -> power -> linear: it can learn to read the power of any band on any channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(C, 4, 25, padding=12)
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.conv(x).pow(2).mean(-1))


def trained(freq: float, chans: tuple[int, ...], other: float, other_chans: tuple[int, ...]) -> PowerNet:
    torch.manual_seed(0)
    x, y = planted(128, freq, chans, other, other_chans, seed=0)
    model = PowerNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * float(y.var()), f"the planted model did not learn (loss {float(loss):.3f})"
    return model.eval()


@pytest.fixture(scope="module")
def alpha_model() -> PowerNet:
    return trained(10.0, PLANTED, 20.0, DISTRACTOR)


# --- the transform and the integral -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 4, 200), (2, 201), (5, 64)])
def test_transforms_round_trip_exactly(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    f = Fourier(shape[-1])
    z = f.forward(x)
    assert z.shape == (*shape[:-1], shape[-1] // 2 + 1, 2)
    # float32 FFTs there and back (MKL/pocketfft pick CPU-specific kernels): the error grows like log2(n) roundings
    # of the signal's rms (1 here): 8 eps log2(n), 7e-6 at n = 200 (measured 7e-7); a wrong scale or window: O(1)
    tol = 8 * torch.finfo(torch.float32).eps * math.log2(shape[-1])
    torch.testing.assert_close(f.inverse(z), x, atol=tol, rtol=0)
    stft = ShortTimeFourier(shape[-1], 32)
    torch.testing.assert_close(stft.inverse(stft.forward(x)), x, atol=tol, rtol=0)
    freqs = Fourier(200).frequencies(100.0).numpy()
    assert freqs[0] == 0 and freqs[-1] == 50.0 and freqs.size == 101 and freqs[20] == 10.0


def test_spectral_ig_equals_captum_on_the_model_composed_with_irfft() -> None:
    """Same numbers as Captum's IntegratedGradients on ``model(irfft(z))``, and they sum to f(x) - f(baseline)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv1d(3, 4, 5, padding=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 40, 1)).eval()
    x = torch.randn(4, 3, 40)
    f = Fourier(40)

    def forward(v: torch.Tensor) -> torch.Tensor:
        return model(v)[:, 0]

    res, z = spectral_integrated_gradients(forward, f, x, torch.zeros(4, 3, 21, 2), None, n_steps=32,
                                           method="gausslegendre", policy=ChunkPolicy(64, None, torch.device("cpu")))
    ref = IntegratedGradients(lambda zz: forward(f.inverse(zz))).attribute(z, n_steps=32, method="gausslegendre")
    torch.testing.assert_close(res.attributions, ref.float(), atol=1e-5, rtol=1e-4)
    expected = forward(x) - forward(torch.zeros_like(x))
    torch.testing.assert_close(res.attributions.sum(dim=(1, 2, 3)), expected.detach(), atol=1e-3, rtol=1e-3)
    assert res.gap.sub(expected).abs().max() < 1e-5  # g(z) == f(x): the round trip is exact


# --- planted rhythms ------------------------------------------------------------------------------------------------

def test_default_steps_converge_with_fewer_evaluations_than_captum_50(alpha_model, tmp_path) -> None:
    """The default (n_steps auto, nested rule) on the trained alpha model: every window's completeness within 1%,
    the spectrum maps equal a 256-step Gauss-Legendre reference within 1% relative L2, fewer than 50 points each."""
    x, y = planted(8, 10.0, PLANTED, 20.0, DISTRACTOR, seed=3)
    s = autopsy(alpha_model, (x, y), tmp_path, {NAME: {}}, eeg={"sfreq": SFREQ})
    d = s["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    assert d["metrics"]["method"] == "nested" and d["metrics"]["n_steps"] == "auto"
    steps = load_array(tmp_path, NAME, "steps")
    assert steps.max() < 50
    gap, delta = load_array(tmp_path, NAME, "gap"), load_array(tmp_path, NAME, "convergence_delta")
    assert np.all(np.abs(delta) <= 0.01 * np.abs(gap) + 1e-6)
    f = Fourier(T)

    def forward(v: torch.Tensor) -> torch.Tensor:
        return alpha_model(v)[:, 0]

    ref, _ = spectral_integrated_gradients(forward, f, x, torch.zeros(8, C, T // 2 + 1, 2), None, n_steps=256,
                                           method="gausslegendre", policy=ChunkPolicy(256, None, torch.device("cpu")))
    ref = ref.attributions.sum(dim=-1).numpy()
    got = load_array(tmp_path, NAME, "attributions")
    rel = np.linalg.norm((got - ref).reshape(8, -1), axis=1) / np.linalg.norm(ref.reshape(8, -1), axis=1)
    assert rel.max() < 0.01, rel


def test_alpha_on_the_planted_channels(alpha_model, tmp_path) -> None:
    x, y = planted(24, 10.0, PLANTED, 20.0, DISTRACTOR, seed=1)
    eeg = {"sfreq": SFREQ, "channel_names": NAMES, "montage": "standard_1020"}
    s = autopsy(alpha_model, (x, y), tmp_path, {NAME: {"n_steps": 16}}, eeg=eeg)
    d = s["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    m = d["metrics"]
    assert m["band_names"] == list(DEFAULT_BANDS)
    assert m["dominant_channel_names"] == [NAMES[c] for c in m["dominant_channels"]]
    assert m["dominant_band"] == "alpha"
    assert m["band_share"]["alpha"] > 0.5 > m["band_share"]["beta"]
    assert set(m["dominant_channels"]) <= set(PLANTED) and m["dominant_channels"]
    assert abs(m["peak_frequency_hz"] - 10.0) <= 1.0
    assert m["median_relative_delta"] < 0.01  # completeness within IG's 1%
    assert not m["confounds"] and not any("confound" in f for f in d["flags"])
    attr, spec = load_array(tmp_path, NAME, "attributions"), load_array(tmp_path, NAME, "spectrum")
    band = load_array(tmp_path, NAME, "band_by_channel")
    freqs = load_array(tmp_path, NAME, "frequencies")
    assert attr.shape == spec.shape == (24, C, T // 2 + 1) and band.shape == (24, 5, C)
    np.testing.assert_allclose(freqs, np.arange(T // 2 + 1) * SFREQ / T)
    assert (spec >= np.abs(attr) / math.sqrt(2) - 1e-7).all()  # |re + im| <= sqrt(2) * sqrt(re^2 + im^2)
    alpha = band[:, list(DEFAULT_BANDS).index("alpha")]
    assert alpha[:, list(PLANTED)].sum() / alpha.sum() > 0.8  # the alpha mass sits on the planted channels
    with torch.no_grad():
        fx, f0 = alpha_model(x)[:, 0], alpha_model(torch.zeros_like(x))[:, 0]
    np.testing.assert_allclose(attr.sum(axis=(1, 2)), (fx - f0).numpy(), rtol=0.01, atol=1e-4)
    np.testing.assert_allclose(load_array(tmp_path, NAME, "gap"), (fx - f0).numpy(), rtol=1e-4, atol=1e-5)
    figures = {a.rsplit("/", 1)[-1] for a in d["artifacts"] if a.endswith(".png")}
    assert {f"{NAME}_frequency.png", f"{NAME}_channel_frequency.png", f"{NAME}_sample0.png"} <= figures
    assert {f"{NAME}_topomap_{band}.png" for band in DEFAULT_BANDS} <= figures  # one scalp map per band (MNE)
    assert "(Hz)" in caption(f"{NAME}_frequency") and "signed" in caption(f"{NAME}_sample0")


def test_line_noise_artefact_is_flagged(tmp_path) -> None:
    model = trained(50.0, (2,), 10.0, PLANTED)  # y reads a 50 Hz component: a learned line-noise artefact
    x, y = planted(16, 50.0, (2,), 10.0, PLANTED, seed=1)
    s = autopsy(model, (x, y), tmp_path, {NAME: {"n_steps": 16}}, eeg={"sfreq": SFREQ})
    d = s["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    assert d["metrics"]["confounds"] == ["line_noise"]
    assert d["metrics"]["confound_shares"]["line_noise"] > 0.5
    flags = [f for f in d["flags"] if "confound" in f]
    assert len(flags) == 1 and "50 Hz" in flags[0], d["flags"]
    # at 60 Hz mains the same map holds no line noise
    profile = load_array(tmp_path, NAME, "mean_spectrum").sum(axis=0)
    freqs = load_array(tmp_path, NAME, "frequencies")
    assert confound_shares(profile, freqs, SFREQ / 2, 60, 1.0, 0.5, 0.05)["line_noise"]["share"] < 0.05
    assert confound_shares(profile, freqs, SFREQ / 2, 50, 1.0, 0.5, 0.05)["line_noise"]["share"] > 0.5


# --- analytic models: time-frequency, one channel, options --------------------------------------------------------

class WindowedPower(nn.Module):
    """Fixed 10 Hz Gabor filter on channel 1, power summed over samples ``lo..hi`` only (no training needed)."""

    def __init__(self, lo: int, hi: int, channel: int = 1) -> None:
        super().__init__()
        t = (torch.arange(33) - 16) / SFREQ
        self.register_buffer("kernel", (torch.cos(2 * math.pi * 10 * t) * torch.hann_window(33)).view(1, 1, -1))
        self.lo, self.hi, self.channel = lo, hi, channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sig = x[:, self.channel : self.channel + 1] if x.ndim == 3 else x.unsqueeze(1)
        v = nn.functional.conv1d(sig, self.kernel, padding=16)[:, 0, self.lo : self.hi]
        return v.pow(2).mean(-1, keepdim=True)


def test_time_frequency_places_a_burst_in_time_and_frequency(tmp_path) -> None:
    x, y = planted(6, 10.0, (1,), 30.0, (1,), seed=2)
    s = autopsy(WindowedPower(80, 112).eval(), (x, y), tmp_path,
                {NAME: {"n_steps": 8, "time_frequency": True, "n_fft": 32}}, eeg={"sfreq": SFREQ})
    d = s["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    m = d["metrics"]
    attr, times = load_array(tmp_path, NAME, "attributions"), load_array(tmp_path, NAME, "frame_times")
    assert attr.shape == (6, C, 17, times.size) and times.size == T // 8 + 1
    assert m["dominant_band"] == "alpha" and abs(m["peak_time_frequency_hz"] - 10.0) <= 4.0
    assert 80 / SFREQ - 0.1 <= m["peak_time_s"] <= 112 / SFREQ + 0.1  # the window the model reads
    assert m["median_relative_delta"] < 0.01
    model = WindowedPower(80, 112).eval()
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x)))[:, 0].numpy()
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), gap, rtol=0.01, atol=1e-4)  # the STFT round trip is exact
    assert load_array(tmp_path, NAME, "band_by_time").shape == (6, 5, times.size)
    assert any(a.endswith(f"{NAME}_time_frequency.png") for a in d["artifacts"])


def test_single_channel_signals_with_the_mean_amplitude_baseline(tmp_path) -> None:
    x, y = planted(6, 10.0, (1,), 30.0, (1,), seed=3)
    x1 = x[:, 1].contiguous()  # (N, T)
    s = autopsy(WindowedPower(0, T).eval(), (x1, y), tmp_path, {NAME: {"n_steps": 8, "baseline": "mean_amplitude"}},
                eeg={"sfreq": SFREQ})
    d = s["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    assert load_array(tmp_path, NAME, "attributions").shape == (6, 1, T // 2 + 1)
    assert load_array(tmp_path, NAME, "band_by_channel").shape == (6, 5, 1)
    assert d["metrics"]["dominant_band"] == "alpha"
    assert d["metrics"]["median_relative_delta"] < 0.01


def test_missing_sampling_rate_and_bad_options_are_named(tmp_path) -> None:
    x, y = planted(4, 10.0, (1,), 30.0, (1,), seed=4)
    s = autopsy(WindowedPower(0, T).eval(), (x, y), tmp_path, {NAME: {"n_steps": 4}})
    d = s["diagnostics"][NAME]
    assert d["status"] == "failed" and "eeg.sfreq" in d["reason"]
    own = {"n_steps": 8, "sfreq": SFREQ, "baseline": "mean", "bands": {"mu": [8, 12], "rest": [12, None]}}
    s = autopsy(WindowedPower(0, T).eval(), (x, y), tmp_path / "own", {NAME: own})
    m = s["diagnostics"][NAME]["metrics"]
    assert m["band_names"] == ["mu", "rest"] and m["dominant_band"] == "mu"
    assert m["median_relative_delta"] < 0.01
    with pytest.raises(CerebroConfigError, match="bands.bad"):
        SpectralIntegratedGradients({"bands": {"bad": [10, 5]}})
    with pytest.raises(CerebroConfigError, match="line_freq"):
        SpectralIntegratedGradients({"line_freq": 55})


# --- the demo, through Hydra, a Lightning Trainer and the callback ------------------------------------------------

def test_demo_report_says_10_hz(tmp_path) -> None:
    """The demo's own config (eeg_regression includes this diagnostic) on a small demo run: the burst the demo plants
    on channels 3-5 is read as alpha, peaking at 10 Hz (within a 0.5 Hz bin), on the planted channels."""
    import json

    import lightning.pytorch as pl
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from cerebro.demo import PLANTED_CHANNELS
    from cerebro.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="demo", overrides=[
            "data.n_train=192", "data.n_val=24", "data.n_chans=8", "trainer.max_epochs=6", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", f"autopsy.output_dir={tmp_path / 'autopsy'}", "autopsy.max_samples=24"])
    # the list form: exactly these two, with eeg_regression's options for them overlaid by n_steps
    OmegaConf.update(cfg, "autopsy.diagnostics", ["predictions", {NAME: {"n_steps": 16}}], merge=False)
    assert "spectral_integrated_gradients" in compose_eeg_regression()
    pl.seed_everything(0)
    trainer = pl.Trainer(default_root_dir=tmp_path, callbacks=[instantiate(cfg.autopsy)], logger=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **cfg.trainer)
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    summary = json.loads((tmp_path / "autopsy" / "summary.json").read_text())
    d = summary["diagnostics"][NAME]
    assert d["status"] == "ok", d["reason"]
    m = d["metrics"]
    assert m["dominant_band"] == "alpha", m["band_share"]
    assert abs(m["peak_frequency_hz"] - 10.0) <= 0.5
    assert set(m["dominant_channels"]) & set(PLANTED_CHANNELS)
    assert m["median_relative_delta"] < 0.01
    html = (tmp_path / "autopsy" / "report.html").read_text()
    assert f"{NAME}_frequency" in html and "alpha" in html


def compose_eeg_regression() -> dict:
    from hydra import compose, initialize_config_dir

    from cerebro.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return dict(compose(config_name="autopsy/eeg_regression").autopsy.preset_diagnostics)
