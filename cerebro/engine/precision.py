"""Precision of gradient passes: float32, or bf16/fp16 inside the model where it is fast, with float32 where it
matters.

One :class:`PrecisionPlan` per diagnostic run. It holds the reduced candidate (a hardware prior: CUDA, or a CPU with
AMX tiles), measures the real cost of every pass in each precision as the work goes (no separate probe: the first
block runs a few samples in float32 and a few in reduced precision, both real work), and keeps reduced precision only
while it pays: the measured seconds the reduced scheme spent (its reduced points, its float32 control variates and
float32 fall-backs) must stay below what the same samples would have cost in float32 at the measured float32 speed.
Speeds per point are taken from full passes (:data:`MEASURE_POINTS`), not from the few points of the side-by-side
samples, where per-pass overhead rules. Accuracy is decided per sample by the scheme that uses the plan (see
:mod:`cerebro.engine.mixed`): a sample that misses its tolerance in reduced precision is finished in float32, so it
ends exactly as a float32 run would.

AVX512-BF16 without AMX is not a candidate by default: bf16 autocast measured only 1.2-1.5x float32's speed per point
there (EEGNeX, resnet18 forward+backward on an AMD EPYC), which does not pay for the float32 control variate.
``precision: bf16`` still forces it on any device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from cerebro.engine.loss_scale import LossScale

__all__ = ["PRECISIONS", "DTYPES", "MIN_SPEEDUP", "MEASURE_POINTS", "LossScale", "PrecisionPlan", "PrecisionOptions",
           "reduced_candidate", "autocast_for", "float32_plan", "plan_for", "precision_option", "record_precision"]

T = TypeVar("T")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
#: ``auto`` keeps reduced precision only while the run's measured cost is at most this fraction of float32's.
PAYING = 0.9
#: Reduced points must be at least this much faster than float32 points on the first block's measurement.
MIN_SPEEDUP = 1.25
#: A pass of at least this many points measures its precision's cost per point. Smaller ones (the first block's
#: side-by-side samples: 6-8 points) are ruled by per-pass overhead and first-call effects: the demo regressor cost
#: 2.5 ms per point in a 6-point pass and 0.35 ms in full chunks, so float32's cost taken there made ``auto`` count
#: bf16 at 0.22x float32's cost while the run took 1.17x float32's time.
MEASURE_POINTS = 16


def reduced_candidate(device: torch.device) -> tuple[str | None, str]:
    """The reduced precision worth trying on ``device`` (or ``None``) and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA device with bf16 support"
        return "fp16", "CUDA device without bf16: fp16"
    if device.type == "mps":
        return None, "MPS: float32 (bf16 autocast on MPS needs macOS 14 and is not measured here)"
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        if amx:
            return "bf16", "CPU with AMX"
        avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        cap = torch.backends.cpu.get_cpu_capability()
        if avx512_bf16:
            return None, ("CPU with AVX512-BF16 but no AMX: bf16 is only 1.2-1.5x faster per point there, "
                          "too little to pay for float32 corrections or a side-by-side first chunk: float32")
        return None, f"this CPU has no bf16 matrix units (AMX; capability {cap}): float32 is fastest"
    return None, f"no reduced precision on {device.type}: float32"


def _name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype in (None, torch.float32) else _NAMES[dtype]


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` for reduced ``dtype`` on ``device``, else a no-op context."""
    from contextlib import nullcontext

    if dtype in (None, torch.float32):
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class PrecisionPlan:
    """The precision of one diagnostic's passes over the whole run, decided on measured cost.

    Args:
        requested: ``auto | fp32 | bf16 | fp16`` (the diagnostic's ``precision`` option).
        device: where the passes run.
    """

    def __init__(self, requested: str, device: torch.device) -> None:
        self.requested, self.device = requested, device
        if requested == "fp32":
            candidate, why = None, "float32 requested"
        elif requested == "auto":
            candidate, why = reduced_candidate(device)
        else:
            candidate, why = requested, f"{requested} requested"
        self.candidate = candidate
        self.reason = why
        self.active = candidate is not None
        #: seconds and points of every timed pass, per precision name
        self.seconds: dict[str, float] = {"fp32": 0.0}
        self.points: dict[str, int] = {"fp32": 0}
        if candidate is not None:
            self.seconds[candidate], self.points[candidate] = 0.0, 0
        self.measured = requested != "auto"  # forced precisions are not judged
        #: samples finished in reduced precision, finished in float32 after missing in reduced, run in float32
        self.samples = {"reduced": 0, "fell_back": 0, "fp32": 0}
        #: float32 points the reduced samples would have cost (their final level), for the cost comparison
        self.fp32_equivalent_points = 0
        self.reduced_seconds = 0.0
        #: float32 seconds per point and reduced speedup measured side by side on the first block (``auto``); the
        #: speedup is measured again on full passes as they come (:meth:`per_point`)
        self.fp32_per_point: float | None = None
        self.measured_speedup: float | None = None
        #: per precision: seconds and points of the passes of at least :data:`MEASURE_POINTS` points, and the
        #: throughput (points per second) per chunk size its chunk policy measured while calibrating
        #: (:meth:`observe_rates`)
        self.full_seconds: dict[str, float] = {}
        self.full_points: dict[str, int] = {}
        self.rates: dict[str, dict[int, float]] = {}
        #: relative L2 distance of reduced-precision maps from float32's (or another measure), where measured side
        #: by side, and its key in :meth:`as_dict`
        self.map_error: float | None = None
        self.error_key = "map_error_vs_fp32"
        #: the loss scale of the candidate's gradient passes (fp16: see :class:`LossScale`)
        self.loss_scale = LossScale(DTYPES[candidate] if candidate is not None else None)

    @property
    def dtype(self) -> torch.dtype | None:
        """The reduced dtype while reduced precision is in use, else ``None`` (float32)."""
        return DTYPES[self.candidate] if self.active and self.candidate is not None else None

    def timed(self, dtype: torch.dtype | None, points: int, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a pass over ``points`` points in ``dtype``) and add its wall time to that precision's meter."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        self.record(dtype, points, time.perf_counter() - t0)
        return out

    def record(self, dtype: torch.dtype | None, points: int, seconds: float) -> None:
        """Add a pass of ``points`` points in ``dtype`` that took ``seconds`` to that precision's meter."""
        name = _name(dtype)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.points[name] = self.points.get(name, 0) + points
        if points >= MEASURE_POINTS:
            self.full_seconds[name] = self.full_seconds.get(name, 0.0) + seconds
            self.full_points[name] = self.full_points.get(name, 0) + points

    def observe_rates(self, dtype: torch.dtype | None, rates: dict[int, float]) -> None:
        """The throughput per chunk size (of at least :data:`MEASURE_POINTS` points) that the chunk policy of
        ``dtype`` passes measured while calibrating."""
        table = self.rates.setdefault(_name(dtype), {})
        for size, rate in rates.items():
            table[size] = max(table.get(size, 0.0), rate)

    def per_point(self, name: str) -> float | None:
        """Seconds per point of precision ``name`` in full passes: its chunk policy's best calibrated throughput,
        else the mean over its passes of at least :data:`MEASURE_POINTS` points, else ``None``."""
        if self.rates.get(name):
            return 1.0 / max(self.rates[name].values())
        if self.full_points.get(name):
            return self.full_seconds[name] / self.full_points[name]
        return None

    def full_speedup(self) -> float | None:
        """The reduced candidate's speed per point over float32's in full passes: at the largest chunk size both
        chunk policies calibrated (the same pass size: the larger the chunk, the faster the point), else from
        :meth:`per_point`; ``None`` until both have been measured."""
        if self.candidate is None:
            return None
        r32, rr = self.rates.get("fp32", {}), self.rates.get(self.candidate, {})
        common = set(r32) & set(rr)
        if common:
            size = max(common)
            return rr[size] / r32[size]
        t32, tr = self.per_point("fp32"), self.per_point(self.candidate)
        return None if t32 is None or tr is None else t32 / tr

    def planned(self, samples: int, points: int, run: Callable[[torch.dtype | None], T]) -> T:
        """``run(dtype)`` on ``samples`` samples (``points`` passes' worth) in the plan's current precision, timed and
        counted."""
        self.samples["reduced" if self.dtype is not None else "fp32"] += samples
        return self.timed(self.dtype, points, lambda: run(self.dtype))

    def side_by_side(self, samples: int, points: int, run: Callable[[torch.dtype | None], T],
                     warm_up: Callable[[torch.dtype | None], object]) -> tuple[T, T, float, float]:
        """The same work, ``run(dtype)``, in float32 and in the candidate precision, each after an untimed
        ``warm_up(dtype)`` (kernel selection) and timed: ``(float32 result, reduced result, float32 seconds per point,
        reduced seconds per point)``. The float32 result is the one kept (its samples count as float32); the caller
        measures the distance and calls :meth:`judge_maps`."""
        dtype = self.dtype
        for d in (None, dtype):
            warm_up(d)
        results, seconds = [], []
        for d in (None, dtype):
            before = sum(self.seconds.values())
            results.append(self.timed(d, points, lambda d=d: run(d)))
            seconds.append(sum(self.seconds.values()) - before)
        self.samples["fp32"] += samples
        return results[0], results[1], seconds[0] / points, seconds[1] / points

    def judge_speed(self, fp32_per_point: float, reduced_per_point: float, points: int | None = None) -> None:
        """After the first block's side-by-side passes: keep reduced precision only if its points are clearly
        faster than float32's (``auto``); forced precisions are only recorded. ``points``: the fewest points either
        side measured; below :data:`MEASURE_POINTS` per-pass overhead rules the timing, so only a reduced side
        slower than float32 declines there, and :meth:`account` judges the speed again on full passes."""
        self.measured = True
        self.fp32_per_point = fp32_per_point
        self.measured_speedup = fp32_per_point / max(reduced_per_point, 1e-12)
        needed = MIN_SPEEDUP if points is None or points >= MEASURE_POINTS else 1.0
        if self.requested == "auto" and self.active and self.measured_speedup < needed:
            self.active = False
            self.reason = (f"{self.reason}, but {self.candidate} measured only {self.measured_speedup:.2f}x "
                           f"float32's speed per point (needs {needed}x): float32")

    def judge_maps(self, fp32_per_point: float, reduced_per_point: float, map_error: float, tolerance: float,
                   measure: str = "maps", scale: str = "relative L2") -> None:
        """After a chunk run in both precisions (methods without a float32 correction): ``auto`` keeps reduced
        precision only if it is faster and its results (``measure``: maps, AUCs) are within ``tolerance``
        (``scale``) of float32's."""
        self.judge_speed(fp32_per_point, reduced_per_point)
        self.map_error = map_error
        if map_error > tolerance and self.active:
            verdict = "float32" if self.requested == "auto" else f"{self.candidate} as requested"
            self.active = self.requested != "auto"
            self.reason = (f"{self.reason}; {self.candidate} moved the first chunk's {measure} by {map_error:.3g} "
                           f"({scale}, tolerance {tolerance}): {verdict}")
        elif self.active:
            self.reason = (f"{self.reason}: {self.measured_speedup:.2f}x faster per point, {measure} within "
                           f"{map_error:.3g} of float32 on the first chunk")

    def account(self, reduced_seconds: float, fp32_equivalent_points: int, limit: float = PAYING) -> None:
        """Add one block's cost of the reduced scheme and the float32 points its samples would have needed; ``auto``
        falls back to float32 for the rest of the run once the scheme's measured cost stops paying (exceeds ``limit``
        times float32's: :data:`PAYING`, or 1 on the first block's few side-by-side samples, where one fall-back more
        or less moves the ratio by a third)."""
        self.reduced_seconds += reduced_seconds
        self.fp32_equivalent_points += fp32_equivalent_points
        full32 = self.per_point("fp32")
        if full32 is not None:  # float32's cost in full passes (control variates, fall-backs), not in the few points
            self.fp32_per_point = full32  # of the side-by-side samples
            speedup = self.full_speedup()
            if speedup is not None:
                self.measured_speedup = speedup
                if self.requested == "auto" and self.active and self.measured_speedup < MIN_SPEEDUP:
                    self.active = False
                    self.reason = (f"{self.reason}; in full passes {self.candidate} measured only "
                                   f"{self.measured_speedup:.2f}x float32's speed per point (needs {MIN_SPEEDUP}x): "
                                   f"float32 for the rest of the run")
                    return
        t32 = self.fp32_per_point
        if self.requested != "auto" or not self.active or t32 is None or not self.fp32_equivalent_points:
            return
        ratio = self.reduced_seconds / (t32 * self.fp32_equivalent_points)
        if ratio > limit:
            self.active = False
            self.reason = (f"{self.reason}; {self.candidate} stopped paying: its samples cost {ratio:.2f}x what "
                           f"float32 would have (control variates and float32 fall-backs included): float32 for "
                           f"the rest of the run")

    @property
    def used(self) -> str:
        """What ran: ``fp32``, the reduced name, or ``mixed`` when both finished samples."""
        if self.candidate is None or self.samples["reduced"] == 0:
            return "fp32"
        return self.candidate if self.samples["fp32"] == 0 and self.samples["fell_back"] == 0 else "mixed"

    def as_dict(self) -> dict[str, Any]:
        """The decision record written to ``summary.json`` (``precision_decision``)."""
        t32 = self.fp32_per_point
        cost = (self.reduced_seconds / (t32 * self.fp32_equivalent_points)
                if t32 and self.fp32_equivalent_points else None)
        speed = self.measured_speedup
        return {"requested": self.requested, "candidate": self.candidate, "used": self.used, "reason": self.reason,
                "speedup_per_point": None if speed is None else round(speed, 3),
                "reduced_cost_vs_fp32": None if cost is None else round(cost, 3),
                self.error_key: self.map_error,
                **({"fp16_loss_scale": self.loss_scale.value} if self.candidate == "fp16" else {}),
                "samples": dict(self.samples), "points": dict(self.points),
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


def precision_option(owner: str, precision: str, autocast: str | None) -> str:
    """The precision ``owner`` runs: its ``precision`` option, or the deprecated ``autocast`` alias (warned once).

    Raises:
        CerebroConfigError: ``autocast`` conflicts with an explicit ``precision``.
    """
    import warnings

    from cerebro.errors import CerebroConfigError

    if autocast is None:
        return precision
    msg = (f"`{owner}.autocast: {autocast}` is deprecated: use `precision: {autocast}` "
           "(or precision: auto, which keeps reduced precision only where it pays)")
    if precision not in ("auto", autocast):
        raise CerebroConfigError(f"{msg}; it conflicts with precision: {precision}")
    warnings.warn(msg, FutureWarning, stacklevel=3)
    return autocast


def float32_plan(requested: str, device: torch.device, reason: str) -> PrecisionPlan:
    """A plan that runs float32 whatever was ``requested`` (recorded as it was), for ``reason``: no reduced
    candidate, no side-by-side chunk."""
    plan = PrecisionPlan("fp32", device)
    plan.requested, plan.reason = requested, reason
    return plan


def plan_for(requested: str, nested: bool, device: torch.device) -> PrecisionPlan:
    """The plan of an IG-family diagnostic: ``auto`` tries reduced precision on the nested rule only (Captum's rules
    stay float32, equal to ``captum.attr.IntegratedGradients``)."""
    if requested != "auto" or nested:
        return PrecisionPlan(requested, device)
    return float32_plan("auto", device, "Captum's rule: float32, equal to captum.attr.IntegratedGradients "
                                        "(precision auto runs reduced precision on the nested rule only)")


def record_precision(out: Any, plan: PrecisionPlan) -> None:
    """The diagnostic's ``precision`` (what ran: fp32, bf16, fp16 or mixed) and ``precision_decision`` metrics."""
    out.metric("precision", plan.used)
    out.metric("precision_decision", plan.as_dict())


@dataclass
class PrecisionOptions:
    """The ``precision`` options of gradient diagnostics with many points per sample (mixed into their Options)."""

    #: auto | fp32 | bf16 | fp16 inside the model. auto tries bf16/fp16 only where the hardware has fast units (CUDA,
    #: CPUs with AMX) and keeps it if the first chunk, run in both precisions, is faster and its maps are within
    #: precision_tolerance of fp32 (the fp32 maps of that chunk are kept); the record is precision_decision.
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    #: Most relative L2 distance from the fp32 maps that reduced precision may cause.
    precision_tolerance: float = field(default=0.02, metadata={"min": 0.0})
