"""Integrated Gradients in the frequency domain: the model composed with an inverse Fourier transform.

FLEX (Gräve et al.): explain ``g(z) = f(irfft(z))`` at ``z = rfft(x)``. The transform is linear and exact
(``irfft(rfft(x), n=T) == x`` to float precision), so ``g(z) = f(x)`` and the attributions of the spectrum's real and
imaginary parts still sum to ``f(x) - f(baseline)``. A short-time Fourier transform (``torch.stft`` /
``torch.istft`` with a Hann window and hop ``n_fft // 4``, exact too) places a transient both in frequency and in
time. The integral itself runs through :func:`cerebro.engine.integrated.integrated_gradients` (chunking, memory
budget, adaptive steps, completeness), unchanged: this module only builds the composed forward and the spectra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cerebro.engine.integrated import IGResult, integrated_gradients

__all__ = ["Fourier", "ShortTimeFourier", "spectral_integrated_gradients", "composed_forward"]


class Fourier:
    """Real FFT over the last axis: ``x (B, ..., T)`` <-> ``z (B, ..., F, 2)`` (real and imaginary parts)."""

    def __init__(self, n_times: int) -> None:
        self.n_times = int(n_times)

    @property
    def n_freqs(self) -> int:
        return self.n_times // 2 + 1

    def frequencies(self, sfreq: float) -> Tensor:
        """Bin centres in Hz, ``(F,)``."""
        return torch.fft.rfftfreq(self.n_times, d=1.0 / float(sfreq), dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        return torch.view_as_real(torch.fft.rfft(x.float(), dim=-1)).contiguous()

    def inverse(self, z: Tensor) -> Tensor:
        return torch.fft.irfft(torch.view_as_complex(z.float().contiguous()), n=self.n_times, dim=-1)


class ShortTimeFourier:
    """STFT over the last axis: ``x (B, ..., T)`` <-> ``z (B, ..., F, W, 2)``; Hann window, centred frames."""

    def __init__(self, n_times: int, n_fft: int, hop_length: int | None = None) -> None:
        self.n_times, self.n_fft = int(n_times), int(n_fft)
        self.hop = int(hop_length or max(1, n_fft // 4))

    def _window(self, like: Tensor) -> Tensor:
        return torch.hann_window(self.n_fft, device=like.device, dtype=torch.float32)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def frequencies(self, sfreq: float) -> Tensor:
        return torch.fft.rfftfreq(self.n_fft, d=1.0 / float(sfreq), dtype=torch.float64)

    def frame_times(self, sfreq: float, n_frames: int) -> Tensor:
        """Centre of each frame in seconds (frames are centred: frame ``w`` is centred on sample ``w * hop``)."""
        return torch.arange(n_frames, dtype=torch.float64) * self.hop / float(sfreq)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        z = torch.stft(x.float().reshape(-1, x.shape[-1]), self.n_fft, self.hop, window=self._window(x),
                       center=True, return_complex=True)
        return torch.view_as_real(z).reshape(*lead, *z.shape[1:], 2).contiguous()

    def inverse(self, z: Tensor) -> Tensor:
        lead = z.shape[:-3]
        c = torch.view_as_complex(z.float().reshape(-1, *z.shape[-3:]).contiguous())
        x = torch.istft(c, self.n_fft, self.hop, window=self._window(z), center=True, length=self.n_times)
        return x.reshape(*lead, self.n_times)


def composed_forward(forward: Callable[..., Tensor], transform: Any, dtype: torch.dtype) -> Callable[..., Tensor]:
    """``g(z, *args) = forward(transform.inverse(z), *args)``; the inverse transform runs in float32 outside
    autocast (half-precision FFTs are limited to powers of two on CUDA), the model sees ``dtype`` inputs."""

    def g(z: Tensor, *args: Tensor) -> Tensor:
        with torch.autocast(z.device.type, enabled=False):
            x = transform.inverse(z)
        return forward(x.to(dtype), *args)

    return g


def spectral_integrated_gradients(forward: Callable[..., Tensor], transform: Any, x: Tensor, base: Tensor,
                                  index: Tensor | None, **ig_options: Any) -> tuple[IGResult, Tensor]:
    """IG of ``forward(transform.inverse(z))`` at ``z = transform.forward(x)`` against the spectrum ``base`` (same
    shape as ``z``). ``ig_options`` go to :func:`~cerebro.engine.integrated.integrated_gradients` as they are
    (``n_steps``, ``method``, ``policy``, ``tolerance``, ...). Returns the result (attributions shaped like ``z``)
    and ``z``."""
    z = transform.forward(x)
    res = integrated_gradients(composed_forward(forward, transform, x.dtype), z, base.to(z), index, **ig_options)
    return res, z
