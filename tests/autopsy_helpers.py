"""Helpers shared by the attribution / health-diagnostic tests: run an autopsy on tensors and read its outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import cerebro

__all__ = ["autopsy", "load_summary", "load_array", "loader"]


def loader(*tensors: torch.Tensor, batch_size: int = 16) -> DataLoader:
    """A plain DataLoader over ``TensorDataset(*tensors)``, in order."""
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=False)


def autopsy(model: nn.Module, tensors: tuple[torch.Tensor, ...], out_dir: Path, diagnostics: Any,
            loader_batch_size: int = 16, **kwargs: Any) -> dict[str, Any]:
    """``run_autopsy`` over a loader of ``tensors``; also checks that the returned summary is the one on disk."""
    kwargs.setdefault("max_samples", int(tensors[0].shape[0]))
    summary = cerebro.run_autopsy(model, loader(*tensors, batch_size=loader_batch_size), diagnostics=diagnostics,
                                  output_dir=out_dir, **kwargs)
    on_disk = load_summary(out_dir)
    assert on_disk["status"] == summary["status"]
    assert on_disk["reason"] == summary["reason"]
    assert set(on_disk["diagnostics"]) == set(summary["diagnostics"])
    return summary


def load_summary(out_dir: Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "summary.json").read_text())


def load_array(out_dir: Path, diagnostic: str, key: str) -> np.ndarray:
    path = Path(out_dir) / "arrays" / diagnostic / f"{key}.npy"
    assert path.is_file(), f"missing array {path}"
    return np.load(path)
