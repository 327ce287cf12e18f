"""Files on disk: ``summary.json``, ``arrays/<diagnostic>/<key>.npy`` and ``figures/<diagnostic>[_<suffix>].png``."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cerebro.engine.store import RowWriter

__all__ = ["ReportWriter", "DiagnosticOutput", "jsonable"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and containers to JSON; NaN and inf become ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: os has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so readers never see half a file. ``mkstemp`` creates it with
    mode 0600; it gets the mode any new file gets (0666 less the umask, 0644 under umask 022) like the figures."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ReportWriter:
    """Owns the output folder. All paths derived from names are sanitised to stay inside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: EEG channel names / sampling rate / montage of (C, T) inputs, for the figures (``cerebro.report.eeg``).
        self.eeg: Any = None
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "figures").mkdir(exist_ok=True)
        (self.root / "arrays").mkdir(exist_ok=True)

    def output(self, name: str) -> DiagnosticOutput:
        return DiagnosticOutput(name, self)

    def save_array(self, diagnostic: str, key: str, array: np.ndarray) -> str:
        folder = self.root / "arrays" / _SAFE.sub("_", diagnostic)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_SAFE.sub('_', key)}.npy"
        np.save(path, np.ascontiguousarray(array))
        return path.relative_to(self.root).as_posix()

    def row_writer(self, diagnostic: str, key: str, shape: tuple[int, ...], dtype: object = np.float32) -> tuple[RowWriter, str]:
        """An ``.npy`` file written block by block, so large runs keep memory flat."""
        path = self.root / "arrays" / _SAFE.sub("_", diagnostic) / f"{_SAFE.sub('_', key)}.npy"
        return RowWriter(path, shape, dtype), path.relative_to(self.root).as_posix()

    def save_figure(self, stem: str, fig: Figure) -> str:
        path = self.root / "figures" / f"{_SAFE.sub('_', stem)}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path.relative_to(self.root).as_posix()

    def discard(self, artifacts: list[str]) -> None:
        """Delete files written under the output folder (and folders left empty)."""
        for rel in artifacts:
            path = self.root / rel
            path.unlink(missing_ok=True)
            if path.parent != self.root and path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.root / "summary.json"
        _atomic_write(path, json.dumps(jsonable(summary), indent=2, allow_nan=False).encode())
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        _atomic_write(path, text.encode())
        return path


class DiagnosticOutput:
    """What one diagnostic produces: metrics, flags and artifacts (files written as they are produced)."""

    def __init__(self, name: str, writer: ReportWriter) -> None:
        self.name = name
        self.writer = writer
        self.metrics: dict[str, Any] = {}
        self.flags: list[str] = []
        self.artifacts: list[str] = []

    def metric(self, key: str, value: Any) -> None:
        self.metrics[key] = jsonable(value)

    def flag(self, message: str) -> None:
        if message not in self.flags:
            self.flags.append(message)

    def array(self, key: str, array: Any) -> np.ndarray:
        arr = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
        self.artifacts.append(self.writer.save_array(self.name, key, arr))
        return arr

    def row_writer(self, key: str, shape: tuple[int, ...], dtype: object = np.float32) -> RowWriter:
        writer, rel = self.writer.row_writer(self.name, key, shape, dtype)
        self.artifacts.append(rel)
        return writer

    def figure(self, fig: Figure, suffix: str = "") -> None:
        stem = f"{self.name}_{suffix}" if suffix else self.name
        self.artifacts.append(self.writer.save_figure(stem, fig))
