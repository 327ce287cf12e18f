"""Row files: ``.npy`` arrays written and read in chunks of rows with plain file I/O.

Memory-mapping would count every touched page in the process's resident memory; plain reads and appends keep peak
memory at one chunk however many samples an autopsy studies. The files are ordinary ``.npy`` files
(``np.load(path, mmap_mode="r")`` works on them).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["RowWriter", "RowTensor"]


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        return tuple(shape), dtype, f.tell()


class RowWriter:
    """Writes an ``.npy`` file of known shape row block by row block (in order, or at given positions)."""

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize if len(self.shape) > 1 else self.dtype.itemsize
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb+")  # noqa: SIM115 - closed in close()
        np.lib.format.write_array_header_1_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})
        self._offset = self._f.tell()
        self._f.truncate(self._offset + self.shape[0] * self.row_bytes)
        self.rows = 0

    def write(self, rows: Any, start: int | None = None) -> None:
        """Write ``rows`` at row ``start`` (default: after the last rows written)."""
        arr = np.ascontiguousarray(rows.detach().cpu().numpy() if isinstance(rows, Tensor) else rows, dtype=self.dtype)
        start = self.rows if start is None else start
        if arr.shape[1:] != self.shape[1:] or start + arr.shape[0] > self.shape[0]:
            raise ValueError(f"rows of shape {arr.shape} at {start} do not fit {self.path.name} of shape {self.shape}")
        self._f.seek(self._offset + start * self.row_bytes)
        self._f.write(arr.tobytes())
        self.rows = max(self.rows, start + arr.shape[0])

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RowTensor:
    """A read-only ``(N, ...)`` tensor on disk: ``t[a:b]`` reads those rows into a CPU tensor."""

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...] | None = None, dtype: Any = None,
                 offset: int = 0) -> None:
        """An ``.npy`` file (``shape=None``), or a raw file of C-ordered rows of ``shape``/``dtype`` at ``offset``."""
        self.path = Path(path)
        if shape is None:
            self._shape, self._dtype, self._offset = _header(self.path)
        else:
            self._shape, self._dtype, self._offset = tuple(shape), np.dtype(dtype), offset

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._shape)

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, dtype=self._dtype)).dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, sl: slice) -> Tensor:
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError("RowTensor supports contiguous slices only")
        start, stop, _ = sl.indices(self._shape[0])
        row = math.prod(self._shape[1:])
        with open(self.path, "rb") as f:
            f.seek(self._offset + start * row * self._dtype.itemsize)
            data = np.fromfile(f, dtype=self._dtype, count=max(0, stop - start) * row)
        return torch.from_numpy(data.reshape((max(0, stop - start), *self._shape[1:])))
