"""One rule for "this map carries no information": non-finite values, all zeros, or a range too small for its scale.

A map is *constant* when its finite values span less than ``rtol`` times its largest absolute value. An exact test
(``range == 0``) misses the common case: a layer whose output has a single spatial/time position (a 1x1 feature map,
e.g. resnet18 ``layer4`` on 32x32 images or braindecode's ``final_layer.conv_classifier``), upsampled onto the
input, gives maps whose range is 1e-7 of their value - rounding noise, not a map. Every attribution method, the
sanity checks and the report's figures use these functions, so they agree on what is degenerate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEGENERATE_RTOL", "constant_rows", "is_constant", "constant_reason"]

#: A map whose range is below this fraction of its largest |value| is constant.
DEGENERATE_RTOL = 1e-4


def constant_rows(flat: np.ndarray, rtol: float = DEGENERATE_RTOL) -> np.ndarray:
    """For maps ``(N, D)`` (one row per sample): True where the finite values span at most ``rtol * max|value|``
    (all-zero rows included; non-finite values are read as 0 and reported separately)."""
    f = np.asarray(flat, dtype=np.float64).reshape(len(flat), -1)
    f = np.where(np.isfinite(f), f, 0.0)
    if f.shape[1] == 0:
        return np.ones(len(f), dtype=bool)
    span = f.max(axis=1) - f.min(axis=1)
    return span <= rtol * np.abs(f).max(axis=1)


def is_constant(values: np.ndarray, rtol: float = DEGENERATE_RTOL) -> bool:
    """Whether one map (any shape) is constant under the relative tolerance."""
    return bool(constant_rows(np.asarray(values).reshape(1, -1), rtol)[0])


def constant_reason(n_constant: int, n: int, rtol: float = DEGENERATE_RTOL) -> str | None:
    """The flag text for ``n_constant`` constant maps out of ``n``, or None when there are none."""
    if not n_constant:
        return None
    who = "every sample's map is" if n_constant == n else f"{n_constant}/{n} samples have a map that is"
    return f"degenerate map: {who} constant (range below {rtol:g} of its largest |value|)"
