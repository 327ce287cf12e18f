"""Precision of attribution passes: float32, or bf16/fp16 inside the model only where it is fast AND accurate.

``auto`` uses reduced precision only when (1) the hardware has fast kernels for it (CUDA; a CPU with AMX or
AVX512-BF16) and a timed probe on the first block runs it at least :data:`MIN_SPEEDUP` times faster than float32, and
(2) the same probe shows that it keeps the result within tolerance of float32: the relative L2 error of the maps and
the shift of the completeness sum ``sum(attr)`` relative to ``|f(x) - f(b)|``. Otherwise the passes run in float32.
The probe's float32 half is real work (the first level of the first samples), so its cost is the reduced half only.

Reduced precision is applied by ``torch.autocast`` inside the model: the interpolation points, the accumulation of
gradients and the endpoints ``f(x)``, ``f(b)`` stay float32 (see :func:`cerebro.engine.integrated.path_sums`), and
the nested rule adds a float32 control variate on its 3-point level
(:func:`cerebro.engine.integrated.reduced_correction`); the probe measures exactly that scheme.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from cerebro.engine.chunking import ChunkPolicy
from cerebro.engine.integrated import nested_rule, path_sums

__all__ = ["PRECISIONS", "DTYPES", "MIN_SPEEDUP", "PrecisionDecision", "reduced_candidate", "decide_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``auto`` keeps float32 unless the reduced pass is at least this much faster on the probe.
MIN_SPEEDUP = 1.25
#: Samples and points (nested rule) of the probe.
PROBE_SAMPLES = 4
PROBE_POINTS = 7


@dataclass
class PrecisionDecision:
    """What ran, why, and what the probe measured (``None`` where nothing was measured)."""

    requested: str
    used: str
    reason: str
    speedup: float | None = None
    map_relative_error: float | None = None
    completeness_shift: float | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or ``None`` for float32."""
        return None if self.used == "fp32" else DTYPES[self.used]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reduced_candidate(device: torch.device) -> tuple[str | None, str]:
    """The reduced precision worth probing on ``device`` (or ``None``) and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA device with bf16 support"
        return "fp16", "CUDA device without bf16: fp16"
    if device.type == "cpu":
        cpu = torch.cpu
        amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        if amx or avx512_bf16:
            return "bf16", "CPU with " + ("AMX" if amx else "AVX512-BF16")
        cap = torch.backends.cpu.get_cpu_capability()
        return None, f"this CPU has no bf16 instructions (AMX or AVX512-BF16; capability {cap}): float32 is fastest"
    return None, f"no reduced-precision probe on {device.type}: float32"


def _timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def decide_precision(requested: str, forward: Callable[..., Tensor], x: Tensor, base: Tensor, index: Tensor | None,
                     gap: Tensor, chunk: int, map_tolerance: float = 0.02, completeness_tolerance: float = 0.005
                     ) -> PrecisionDecision:
    """Choose the precision of the passes from a probe on the first samples ``x`` (``gap = f(x) - f(base)``).

    ``fp32`` runs nothing. ``bf16``/``fp16`` are used as asked, with the probe's error recorded. ``auto`` keeps the
    reduced candidate only if it is at least :data:`MIN_SPEEDUP` faster and within both tolerances.
    """
    if requested == "fp32":
        return PrecisionDecision(requested, "fp32", "float32 requested")
    candidate, why = (requested, "requested") if requested != "auto" else reduced_candidate(x.device)
    if candidate is None:
        return PrecisionDecision(requested, "fp32", why)
    k = min(PROBE_SAMPLES, x.shape[0])
    x, base, gap = x[:k], base[:k], gap[:k]
    index = None if index is None else index[:k]
    w, a = nested_rule(PROBE_POINTS)
    sub, _ = nested_rule(PROBE_POINTS // 2)  # the 3-point level inside the 7 points (every other point)
    alphas = torch.tensor(a)
    weights = torch.tensor([w, [sub[i // 2] if i % 2 else 0.0 for i in range(PROBE_POINTS)]])
    size = max(1, min(chunk, k * PROBE_POINTS))
    dtype = DTYPES[candidate]

    def run(d: torch.dtype | None) -> Tensor:
        return path_sums(forward, x, base, index, alphas, weights, ChunkPolicy(size, None, x.device, size), d)

    with torch.enable_grad():
        for d in (None, dtype):  # warm-up: one point each (kernel selection, autocast caches)
            path_sums(forward, x[:1], base[:1], None if index is None else index[:1], alphas[:1], weights[:1, :1],
                      ChunkPolicy(1, None, x.device, 1), d)
        g32, t32 = _timed(lambda: run(None), x.device)
        g16, t16 = _timed(lambda: run(dtype), x.device)
    diff = (x - base).float()
    # what the nested rule runs: the reduced level plus the fp32 control variate on its 3-point sub-level
    a32, a16 = (g32[0] * diff).reshape(k, -1), ((g16[0] + g32[1] - g16[1]) * diff).reshape(k, -1)
    err = ((a16 - a32).norm(dim=1) / a32.norm(dim=1).clamp_min(1e-30)).nan_to_num(nan=float("inf"))
    err = torch.where(a32.norm(dim=1) > 0, err, (a16 != 0).any(dim=1).float() * float("inf"))
    shift = ((a16.sum(dim=1) - a32.sum(dim=1)).abs() / gap.abs().clamp_min(1e-12)).nan_to_num(nan=float("inf"))
    dec = PrecisionDecision(requested, candidate, why, round(t32 / max(t16, 1e-9), 3), float(err.max()),
                            float(shift.max()))
    accurate = dec.map_relative_error <= map_tolerance and dec.completeness_shift <= completeness_tolerance
    if requested != "auto":
        if not accurate:
            dec.reason = (f"{candidate} requested; the probe moved the maps by {dec.map_relative_error:.3g} (relative "
                          f"L2, tolerance {map_tolerance}) and completeness by {dec.completeness_shift:.3g} of "
                          f"|f(x) - f(b)| (tolerance {completeness_tolerance}): use precision auto or fp32")
        return dec
    if dec.speedup is not None and dec.speedup < MIN_SPEEDUP:
        dec.used, dec.reason = "fp32", f"{why}, but {candidate} measured only {dec.speedup:.2f}x float32's speed"
    elif not accurate:
        dec.used, dec.reason = "fp32", (
            f"{why}, {dec.speedup:.2f}x faster, but {candidate} moved the maps by {dec.map_relative_error:.3g} "
            f"(tolerance {map_tolerance}) and completeness by {dec.completeness_shift:.3g} (tolerance "
            f"{completeness_tolerance})")
    else:
        dec.reason = f"{why}: {dec.speedup:.2f}x faster and within tolerance of float32 on the probe"
    return dec
