"""``spectral_integrated_gradients``: which rhythms, on which channels, the model's target depends on.

Integrated Gradients (Sundararajan et al., ICML 2017) of the model composed with an inverse real FFT, evaluated on
the input's spectrum: FLEX, Gräve et al., "Frequency-domain explanations of EEG/time-series models" (the
attributions of the spectrum still sum to ``f(x) - f(baseline)``). The integral runs through the same engine as
``integrated_gradients`` (:mod:`cerebro.engine.integrated`, via :mod:`cerebro.engine.spectral`): chunks in the
memory budget, adaptive steps, completeness deltas, DDP sharding.

Per sample, channel and frequency bin the real- and imaginary-part attributions are summed into one signed value
(``attributions.npy``, they add up to ``f(x) - f(baseline)``) and combined into a magnitude
``sqrt(re^2 + im^2)`` (``spectrum.npy``): the band summaries, shares and confound flags use the magnitudes.
With ``time_frequency: true`` the same runs on a short-time Fourier transform and every map gains a time-window
axis: ``(N, C, F, W)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from cerebro.diagnostics.attribution import AttributionDiagnostic
from cerebro.engine.attribution import MapStats
from cerebro.engine.baselines import make_baseline
from cerebro.engine.budget import points_per_pass
from cerebro.engine import integrated
from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.context import AutopsyContext
from cerebro.engine.precision import PRECISIONS, plan_for, precision_option, record_precision
from cerebro.engine.spectral import Fourier, ShortTimeFourier, spectral_integrated_gradients
from cerebro.errors import CerebroConfigError
from cerebro.registry import register_diagnostic
from cerebro.report.spectral import spectral_figures, spectral_sample_figure
from cerebro.report.writer import DiagnosticOutput

__all__ = ["SpectralIntegratedGradients", "DEFAULT_BANDS", "band_masks", "confound_shares"]

#: Classic EEG bands in Hz; ``None`` as upper edge = the Nyquist frequency (inclusive).
DEFAULT_BANDS: dict[str, list[Optional[float]]] = {
    "delta": [0.5, 4.0], "theta": [4.0, 8.0], "alpha": [8.0, 13.0], "beta": [13.0, 30.0], "gamma": [30.0, None]}
#: Captum's rules (equal to ``captum.attr.IntegratedGradients`` at the same n_steps), and the engine's nested rule
#: when it has one.
_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
            integrated.NESTED)
_NAME = "spectral_integrated_gradients"
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SpectralIntegratedGradientsOptions:
    #: Integration steps per sample, or auto (refine each sample until it converges), as integrated_gradients.
    n_steps: Any = "auto"
    #: zeros (zero spectrum) | mean (the sample set's mean spectrum) | mean_amplitude (mean amplitude, own phase).
    baseline: str = field(default="zeros", metadata={"choices": ("zeros", "mean", "mean_amplitude")})
    #: auto (nested with n_steps auto, else gausslegendre), nested, or one of Captum's rules.
    method: str = field(default="auto", metadata={"choices": ("auto", *_METHODS)})
    #: Interpolation points per forward+backward pass; null = calibrated within the memory budget.
    internal_batch_size: Optional[int] = field(default=None, metadata={"min": 1})
    #: Samples whose |delta| exceeds this fraction of |f(x) - f(baseline)| are flagged (auto's target).
    delta_tolerance: float = field(default=0.01, metadata={"min": 0.0})
    #: Most steps n_steps=auto may use per sample.
    max_steps: int = field(default=512, metadata={"min": 2})
    #: auto | fp32 | bf16 | fp16: precision inside the model, as integrated_gradients (the inverse FFT stays fp32).
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    #: with bf16/fp16, a sample whose map's rounding floor (relative L2 vs fp32) exceeds this is finished in fp32.
    precision_tolerance: float = field(default=0.02, metadata={"min": 0.0})
    #: Deprecated: use precision (bf16 | fp16 map to it).
    autocast: Optional[str] = field(default=None, metadata={"choices": (None, *AUTOCAST)})
    #: Sampling rate in Hz; null = the autopsy's eeg.sfreq.
    sfreq: Optional[float] = field(default=None, metadata={"min": 0.0})
    #: {name: [low, high]} in Hz (low <= f < high; high null = up to Nyquist); null = delta/theta/alpha/beta/gamma.
    bands: Optional[Dict[str, Any]] = None
    #: Power-line frequency whose harmonics are checked: 50 | 60 | null (no line check).
    line_freq: Optional[int] = field(default=50, metadata={"choices": (50, 60, None)})
    #: Half-width in Hz of the line-noise windows (at least half a frequency bin).
    line_width: float = field(default=1.0, metadata={"min": 0.0})
    #: Frequencies below this (Hz) count as slow drift.
    drift_below: float = field(default=0.5, metadata={"min": 0.0})
    #: The top fraction of the band up to Nyquist counted as the Nyquist edge.
    nyquist_edge: float = field(default=0.05, metadata={"min": 0.0})
    #: A confound (drift, line noise, Nyquist edge) holding more than this share of |attribution| is flagged.
    confound_share: float = field(default=0.1, metadata={"min": 0.0})
    #: Short-time Fourier transform instead of one FFT per window: maps gain a time-window axis (N, C, F, W).
    time_frequency: bool = False
    #: STFT window length in samples (Hann); frequency resolution sfreq / n_fft.
    n_fft: int = field(default=64, metadata={"min": 2})
    #: STFT hop in samples; null = n_fft // 4 (exact inverse with the Hann window).
    hop_length: Optional[int] = field(default=None, metadata={"min": 1})
    #: Channels drawn in the frequency-profile figure.
    top_channels: int = field(default=3, metadata={"min": 1})


def _band_ok(edges: Any) -> bool:
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    if not isinstance(edges, (list, tuple)) or len(edges) != 2 or not num(edges[0]) or edges[0] < 0:
        return False
    return edges[1] is None or (num(edges[1]) and edges[0] < edges[1])


def band_masks(freqs: np.ndarray, bands: dict[str, list[Optional[float]]]) -> np.ndarray:
    """``(bands, F)`` booleans: ``low <= f < high`` (``high`` None: ``f <= Nyquist``)."""
    return np.stack([(freqs >= lo) & ((freqs <= freqs[-1]) if hi is None else (freqs < hi))
                     for lo, hi in bands.values()]) if bands else np.zeros((0, freqs.size), bool)


def confound_shares(profile: np.ndarray, freqs: np.ndarray, nyquist: float, line_freq: Optional[float],
                    line_width: float, drift_below: float, nyquist_edge: float) -> dict[str, dict[str, Any]]:
    """Share of the total of ``profile`` (|attribution| per frequency bin) in slow drift, at the power line and its
    harmonics below Nyquist, and at the Nyquist edge; each with the frequencies it covers."""
    total = max(float(profile.sum()), 1e-30)
    df = float(freqs[1] - freqs[0]) if freqs.size > 1 else nyquist
    out = {"slow_drift": {"share": float(profile[freqs < drift_below].sum() / total), "hz": f"< {drift_below:g} Hz"}}
    if line_freq:
        harmonics = [k * line_freq for k in range(1, int(nyquist // line_freq) + 1)]
        if harmonics:
            width = max(line_width, df / 2)
            near = np.zeros(freqs.size, bool)
            for h in harmonics:
                near |= np.abs(freqs - h) <= width
            out["line_noise"] = {"share": float(profile[near].sum() / total),
                                 "hz": ", ".join(f"{h:g}" for h in harmonics) + " Hz"}
    edge = freqs >= (1.0 - nyquist_edge) * nyquist
    out["nyquist_edge"] = {"share": float(profile[edge].sum() / total), "hz": f">= {(1 - nyquist_edge) * nyquist:g} Hz"}
    return out


_CONFOUND_TEXT = {"slow_drift": "slow-drift confound", "line_noise": "power-line confound",
                  "nyquist_edge": "Nyquist-edge confound"}
_CONFOUND_HINT = {"slow_drift": "high-pass filter or detrend the windows",
                  "line_noise": "notch-filter the line frequency or check the recordings",
                  "nyquist_edge": "low-pass filter before resampling (aliasing)"}


@register_diagnostic(_NAME)
class SpectralIntegratedGradients(AttributionDiagnostic):
    """Frequency (or time-frequency) attributions of ``(C, T)`` / ``(T,)`` signals, band summaries, confound flags."""

    Options = SpectralIntegratedGradientsOptions
    sample_figures = 2

    def validate(self) -> None:
        self.options.precision = precision_option(_NAME, self.options.precision, self.options.autocast)
        o = self.options
        integrated.check_steps(_NAME, o.n_steps, o.method)
        for name, edges in (o.bands or {}).items():
            if not _band_ok(edges):
                raise CerebroConfigError(f"`{_NAME}.bands.{name}` must be [low, high] Hz with 0 <= low < high "
                                         f"(high null = Nyquist), got {edges!r}")
            o.bands[name] = [float(edges[0]), None if edges[1] is None else float(edges[1])]
        if o.bands is not None and not o.bands:
            raise CerebroConfigError(f"`{_NAME}.bands` needs at least one band (null = the default EEG bands)")
        if o.sfreq is not None and not 0 < o.sfreq < float("inf"):
            raise CerebroConfigError(f"`{_NAME}.sfreq` must be a positive number of Hz, got {o.sfreq!r}")
        if o.nyquist_edge >= 1:
            raise CerebroConfigError(f"`{_NAME}.nyquist_edge` must be a fraction below 1, got {o.nyquist_edge}")

    @property
    def rule(self) -> str:
        """The integration rule that runs (as integrated_gradients: auto = nested when n_steps is auto)."""
        return integrated.rule_for(self.options.method, self.options.n_steps)

    @property
    def bands(self) -> dict[str, list[Optional[float]]]:
        return dict(self.options.bands) if self.options.bands is not None else dict(DEFAULT_BANDS)

    def _transform(self, n_times: int) -> Fourier | ShortTimeFourier:
        o = self.options
        if not o.time_frequency:
            return Fourier(n_times)
        if o.n_fft > n_times:
            raise CerebroConfigError(f"`{_NAME}.n_fft` ({o.n_fft}) is longer than the input ({n_times} samples)")
        return ShortTimeFourier(n_times, o.n_fft, o.hop_length)

    def sfreq(self, out: DiagnosticOutput) -> float | None:
        eeg = getattr(out.writer, "eeg", None)
        return self.options.sfreq or (eeg.sfreq if eeg is not None else None)

    def start(self, ctx: AutopsyContext, out: DiagnosticOutput) -> dict[str, Any]:
        o = self.options
        shape = tuple(ctx.samples.input_shape)
        if len(shape) not in (1, 2):
            raise CerebroConfigError(f"{_NAME} needs (channels, time) or (time,) signals, got input shape {shape}")
        if out.writer is not None and not self.sfreq(out):
            raise CerebroConfigError(f"{_NAME} needs the sampling rate for frequencies in Hz: set eeg.sfreq of the "
                                     f"autopsy or this diagnostic's sfreq option")
        transform = self._transform(shape[-1])
        if o.hop_length and o.time_frequency and o.hop_length > o.n_fft // 2:
            raise CerebroConfigError(f"`{_NAME}.hop_length` must be <= n_fft // 2 ({o.n_fft // 2}) for an exact "
                                     f"inverse STFT with the Hann window, got {o.hop_length}")
        limit = o.internal_batch_size or points_per_pass(ctx.model, ctx.x(slice(0, 1)), ctx.memory_budget)
        key = (_NAME, type(ctx.model).__qualname__, shape, str(ctx.device), o.time_frequency)
        plan = plan_for(o.precision, self.rule == integrated.NESTED, ctx.device)
        base = None
        if o.baseline == "mean":
            base = transform.forward(make_baseline("mean", ctx.samples.x, owner=_NAME).to(ctx.device))
        elif o.baseline == "mean_amplitude":
            total = None
            for sl in ctx.chunks():
                amp_z = torch.linalg.vector_norm(transform.forward(ctx.x(sl)), dim=-1).double().sum(dim=0)
                total = amp_z if total is None else total + amp_z
            base = (total / ctx.n).float().unsqueeze(0)
        policies = {d: ChunkPolicy(limit, (*key, str(d)), ctx.device, fixed=o.internal_batch_size)
                    for d in (None, plan.dtype)}
        return {"transform": transform, "base": base, "plan": plan, "policies": policies}

    def _baseline(self, state: dict[str, Any], z: Tensor) -> Tensor:
        base = state["base"]
        if base is None:
            return torch.zeros_like(z)
        if self.options.baseline == "mean":
            return base.expand_as(z)
        norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)  # own phase, the set's mean amplitude
        return torch.where(norm > 0, z / norm.clamp_min(1e-30), torch.zeros_like(z)) * base.unsqueeze(-1)

    def blocks(self, ctx: AutopsyContext, state: dict[str, Any], samples: slice
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        o, transform = self.options, state["transform"]
        block = max(ctx.batch_size, 64)
        for start in range(samples.start, samples.stop, block):
            sl = slice(start, min(start + block, samples.stop))
            x = ctx.x(sl)
            base = self._baseline(state, transform.forward(x))
            index = None if ctx.index is None else ctx.index[sl].to(ctx.device)
            res, _ = spectral_integrated_gradients(
                ctx.forward, transform, x, base, index, n_steps=None if o.n_steps == "auto" else o.n_steps,
                method=self.rule, policy=lambda d: state["policies"].get(d, state["policies"][None]),
                tolerance=o.delta_tolerance, max_steps=o.max_steps, plan=state["plan"], precision_tolerance=o.precision_tolerance)
            a = res.attributions
            if x.ndim == 2:  # (T,) signals: one channel
                a = a.unsqueeze(1)
            yield sl.start, {"attributions": a.sum(dim=-1).cpu().numpy(),
                             "spectrum": torch.linalg.vector_norm(a, dim=-1).cpu().numpy(),
                             "convergence_delta": res.delta.double().cpu().numpy(),
                             "gap": res.gap.double().cpu().numpy(), "steps": res.steps.cpu().numpy()}

    def finish(self, ctx: AutopsyContext, out: DiagnosticOutput, state: dict[str, Any],
               arrays: dict[str, np.ndarray], stats: MapStats, map_shape: tuple[int, ...]) -> None:
        o, transform = self.options, state["transform"]
        sfreq = float(self.sfreq(out))
        freqs = transform.frequencies(sfreq).numpy()
        self._frequencies = freqs
        out.array("frequencies", freqs)
        spectrum = out.array("spectrum", arrays["spectrum"])
        self._completeness(ctx, out, arrays, state)
        for reason in stats.reasons():
            out.flag(reason)
        per_bin = spectrum if spectrum.ndim == 3 else spectrum.sum(axis=-1)  # (N, C, F), windows summed
        bands = self.bands
        masks = band_masks(freqs, bands)
        band_by_channel = np.einsum("ncf,bf->nbc", per_bin.astype(np.float64), masks.astype(np.float64))
        out.array("band_by_channel", band_by_channel.astype(np.float32))
        total = max(float(per_bin.sum(dtype=np.float64)), 1e-30)
        share = band_by_channel.sum(axis=(0, 2)) / total
        names = list(bands)
        out.metric("band_names", names)
        out.metric("band_edges_hz", {n: [lo, hi if hi is not None else sfreq / 2] for n, (lo, hi) in bands.items()})
        out.metric("band_share", {n: float(s) for n, s in zip(names, share)})
        out.metric("frequencies_hz", [float(freqs[0]), float(freqs[-1]), float(freqs[1] - freqs[0])])
        dominant = int(np.argmax(share))
        out.metric("dominant_band", names[dominant])
        out.metric("dominant_bands", [n for n, s in zip(names, share) if s >= 0.5 * share[dominant] and s > 0])
        mean_cf = per_bin.mean(axis=0, dtype=np.float64)  # (C, F)
        out.array("mean_spectrum", mean_cf.astype(np.float32))
        profile = mean_cf.sum(axis=0)
        out.metric("peak_frequency_hz", float(freqs[int(np.argmax(profile))]))
        by_band = band_by_channel.mean(axis=0)  # (bands, C)
        eeg = getattr(out.writer, "eeg", None)
        channel_names = eeg.channel_names if eeg is not None and eeg.channel_names else None
        chan = by_band[dominant]
        order = np.argsort(-chan, kind="stable")
        top = [int(c) for c in order[:10] if chan[c] >= 0.5 * chan[order[0]] and chan[c] > 0]
        out.metric("dominant_channels", top)
        if channel_names:
            out.metric("dominant_channel_names", [channel_names[c] for c in top])
        out.metric("band_channels", {n: [int(c) for c in np.argsort(-by_band[b], kind="stable")[:3]]
                                     for b, n in enumerate(names)})
        out.metric("band_share_by_channel", {n: (by_band[b] / total * ctx.n).tolist() for b, n in enumerate(names)})
        self._confounds(out, profile, freqs, sfreq / 2)
        extra: dict[str, Any] = {}
        if spectrum.ndim == 4:  # time-frequency: (N, C, F, W)
            times = transform.frame_times(sfreq, spectrum.shape[-1]).numpy()
            out.array("frame_times", times)
            band_by_time = np.einsum("ncfw,bf->nbw", spectrum.astype(np.float64), masks.astype(np.float64))
            out.array("band_by_time", band_by_time.astype(np.float32))
            tf = spectrum.mean(axis=(0, 1), dtype=np.float64)  # (F, W)
            f_peak, w_peak = np.unravel_index(int(np.argmax(tf)), tf.shape)
            out.metric("peak_time_s", float(times[w_peak]))
            out.metric("peak_time_frequency_hz", float(freqs[f_peak]))
            out.metric("dominant_band_peak_time_s", float(times[int(np.argmax(band_by_time[:, dominant].mean(0)))]))
            extra = {"tf_map": tf, "times": times}
        for key, fig in spectral_figures(mean_cf, freqs, bands, by_band, channel_names,
                                         eeg.montage if eeg is not None else None, o.top_channels, **extra).items():
            out.figure(fig, key)

    def _completeness(self, ctx: AutopsyContext, out: DiagnosticOutput, arrays: dict[str, np.ndarray],
                      state: dict[str, Any]) -> None:
        """Convergence deltas, like ``integrated_gradients``: the attributions must sum to f(x) - f(baseline)."""
        o = self.options
        deltas, gaps, steps = arrays["convergence_delta"], arrays["gap"], arrays["steps"]
        out.array("convergence_delta", deltas)
        out.array("steps", steps)
        out.array("gap", gaps)
        rel = np.abs(deltas) / np.maximum(np.abs(gaps), 1e-12)
        adaptive = o.n_steps == "auto"
        out.metric("n_steps", o.n_steps)
        out.metric("baseline", o.baseline)
        out.metric("time_frequency", o.time_frequency)
        out.metric("steps_max", int(steps.max()))
        out.metric("steps_mean", float(steps.mean()))
        out.metric("method", self.rule)
        record_precision(out, state["plan"])
        out.metric("mean_abs_delta", float(np.mean(np.abs(deltas))))
        out.metric("max_abs_delta", float(np.max(np.abs(deltas))))
        out.metric("median_relative_delta", float(np.median(rel)))
        bad = int(np.sum((rel > o.delta_tolerance) & (np.abs(deltas) > 1e-6)))
        out.metric("not_converged", bad)
        if bad:
            hint = f"still above tolerance at max_steps={o.max_steps}" if adaptive else "raise n_steps or use auto"
            out.flag(f"spectral IG not converged on {bad}/{ctx.n} samples (|delta| > {o.delta_tolerance:.0%} of "
                     f"|f(x) - f(baseline)|): {hint}")

    def _confounds(self, out: DiagnosticOutput, profile: np.ndarray, freqs: np.ndarray, nyquist: float) -> None:
        o = self.options
        shares = confound_shares(profile, freqs, nyquist, o.line_freq, o.line_width, o.drift_below, o.nyquist_edge)
        out.metric("confound_shares", {k: v["share"] for k, v in shares.items()})
        flagged = []
        for kind, v in shares.items():
            if v["share"] > o.confound_share:
                flagged.append(kind)
                out.flag(f"{_CONFOUND_TEXT[kind]}: {v['share']:.0%} of |attribution| at {v['hz']} (above "
                         f"{o.confound_share:.0%}): the model may have learned an artefact; {_CONFOUND_HINT[kind]}")
        out.metric("confounds", flagged)

    def sample_view(self, x: np.ndarray, attr: np.ndarray, title: str) -> Figure:
        return spectral_sample_figure(x, attr, getattr(self, "_frequencies", None), title)
