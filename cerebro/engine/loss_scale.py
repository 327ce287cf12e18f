"""Loss scaling of fp16 gradient passes (:class:`LossScale`), held by a
:class:`~cerebro.engine.precision.PrecisionPlan` across a run's passes."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LossScale"]


class LossScale:
    """Loss scaling of fp16 gradient passes, as :class:`torch.amp.GradScaler` does for training.

    fp16 keeps 3 more mantissa bits than bf16 but not float32's range: gradients below 6e-5 lose bits and those below
    6e-8 vanish. Input gradients of a scalar output are that small on wide inputs (EEGNeX on 129 x 200 windows: median
    2e-6), so unscaled fp16 moved EEGNeX's gradients by 6.6% (relative L2) where bf16 moved them by 0.6%; scaled,
    fp16 moves them by 0.2%. The output is multiplied by :attr:`value` before the backward pass and the gradient
    divided by it after (both exact: powers of 2). A pass whose gradient overflows (inf/NaN while the output itself is
    finite) is redone at a 16 times smaller scale, which the run then keeps until :attr:`GROWTH_INTERVAL` passes
    without overflow double it again (up to :attr:`START`). bf16 and float32 have float32's range:
    scale 1, nothing checked.
    """

    #: First scale of fp16 passes: 4 times below fp16's largest value (65504), so the scaled seed gradient itself and
    #: layer gradients up to 4 times the output's fit (GradScaler's 2**16 overflows on its first step by design).
    START = 2.0**14
    #: Factor by which an overflowing pass lowers the scale.
    BACKOFF = 16.0
    #: Passes without overflow after which a lowered scale doubles again, up to :attr:`START` (as GradScaler's
    #: ``growth_interval``): one sample's large gradients do not leave the rest of the run at a scale where small
    #: ones underflow.
    GROWTH_INTERVAL = 50

    def __init__(self, dtype: torch.dtype | None) -> None:
        self.fp16 = dtype == torch.float16
        self.value = self.START if self.fp16 else 1.0
        #: passes redone at a lower scale after an overflow
        self.retries = 0
        self._clean = 0

    def _backoff(self) -> None:
        self.value = max(self.value / self.BACKOFF, 1.0)
        self.retries += 1
        self._clean = 0

    def _passed(self) -> None:
        """An fp16 pass without overflow: after :attr:`GROWTH_INTERVAL` of them a lowered scale doubles."""
        if not self.fp16 or self.value >= self.START:
            return
        self._clean += 1
        if self._clean >= self.GROWTH_INTERVAL:
            self.value, self._clean = min(self.value * 2, self.START), 0

    def gradient(self, output: Callable[[], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """``d sum(output()) / d inputs`` with the output scaled (``output`` runs the forward pass, again on a
        retry)."""
        while True:
            out = output()
            used = self.value
            (g,) = torch.autograd.grad(out.sum() * used, inputs)
            if not self.fp16:
                return g
            finite = bool(torch.isfinite(g).all())
            if finite or used == 1.0 or not bool(torch.isfinite(out).all()):  # a non-finite output: no scale helps
                if finite:
                    self._passed()
                return g if used == 1.0 else g / used
            self._backoff()

    def scaled(self, run: Callable[[float], torch.Tensor], degree: int = 1) -> torch.Tensor:
        """``run(value)`` computes with the output multiplied by ``value`` (e.g. a Captum method on a scaled forward
        function); its result, of degree ``degree`` in the output's scale, is divided by ``value ** degree`` in
        float32. A non-finite result is recomputed at lower scales; if it stays non-finite at scale 1 the scale was
        not the cause (the forward pass overflows): the scale is restored and the result returned as it is."""
        start = self.value
        while True:
            out = run(self.value)
            if self.value == 1.0 or bool(torch.isfinite(out).all()):
                break
            self._backoff()
        used = self.value
        if used == 1.0 and not bool(torch.isfinite(out).all()):
            self.value = start
            return out
        self._passed()
        return out if used == 1.0 else out.to(torch.promote_types(out.dtype, torch.float32)) / used**degree
