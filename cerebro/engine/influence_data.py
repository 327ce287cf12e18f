"""What ``training_influence`` needs from the training run: the training data in a fixed order, and checkpoints.

The callback (or the ``cerebro-autopsy`` script) builds a :class:`TrainingData` and hands it to the diagnostic
through ``AutopsyContext.extras["training_influence"]``. Reading it never touches the training run: the loader is a
new ``DataLoader`` over the same dataset (sequential, no workers, same ``collate_fn``), read after training under
the autopsy's preserved random state.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset

from cerebro.engine.influence import Snapshot
from cerebro.errors import CerebroConfigError
from cerebro.samples import BatchSpec

__all__ = ["TrainingData", "fixed_order", "SnapshotRecorder", "checkpoint_paths", "training_extras"]

KEY = "training_influence"


@dataclass
class TrainingData:
    """The training loader in a fixed order, what it yields (``indices``: dataset positions), and the snapshots
    the callback kept (empty: the diagnostic's ``checkpoints`` option names files)."""

    loader: Iterable[Any] | None
    spec: BatchSpec = field(default_factory=BatchSpec)
    indices: np.ndarray | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    source: str = "train_dataloader"
    note: str | None = None
    weights_only: bool = True


def fixed_order(loader: Any) -> tuple[Any, np.ndarray | None, str | None]:
    """A loader over the same samples in dataset order: ``(loader, dataset indices or None, note)``.

    A ``DataLoader`` is rebuilt with a sequential sampler, ``num_workers=0`` and its own ``collate_fn`` (a subset
    sampler keeps its subset, sorted); any other iterable is read as it is, and the note says its order may vary.
    """
    if not isinstance(loader, DataLoader):
        return loader, None, (f"the training data is a {type(loader).__name__}, not a torch DataLoader: read as it "
                              "iterates (its order and augmentation are its own)")
    dataset = loader.dataset
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 32
    if isinstance(dataset, IterableDataset):
        rebuilt = DataLoader(dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn, num_workers=0)
        return rebuilt, None, "an IterableDataset: read in the order it yields"
    sampler = loader.sampler if loader.batch_sampler is None else getattr(loader.batch_sampler, "sampler", None)
    subset = getattr(sampler, "indices", None)
    indices = np.arange(len(dataset), dtype=np.int64)  # type: ignore[arg-type]
    if subset is not None:
        indices = np.sort(np.asarray(list(subset), dtype=np.int64))
        dataset = Subset(dataset, indices.tolist())
    rebuilt = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=loader.collate_fn, num_workers=0)
    return rebuilt, indices, None


class SnapshotRecorder:
    """Copies of the parameters TracIn uses, kept on the CPU every ``every`` epochs with the epoch's learning rate
    (the callback's part; nothing here touches the training's random state or its tensors)."""

    def __init__(self, names: Sequence[str], every: int) -> None:
        self.names, self.every = list(names), every
        self.snapshots: list[Snapshot] = []

    def maybe_keep(self, model: nn.Module, epoch: int, optimizers: Sequence[Any]) -> bool:
        if (epoch + 1) % self.every:
            return False
        params = dict(model.named_parameters())
        state = {n: params[n].detach().to("cpu", copy=True) for n in self.names if n in params}
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else 1.0
        self.snapshots = [s for s in self.snapshots if s.label != f"epoch {epoch}"]  # a resumed epoch replaces
        self.snapshots.append(Snapshot(state, lr, f"epoch {epoch}"))
        return True


def checkpoint_paths(spec: str | Sequence[str]) -> list[str]:
    """Files named by a glob or a list of paths/globs, in sorted order within each glob."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        matches = sorted(glob.glob(os.path.expanduser(str(item))))
        if not matches:
            raise CerebroConfigError(f"`training_influence.checkpoints`: {item!r} matches no file (relative paths "
                                     f"start in {os.getcwd()})")
        out += [m for m in matches if m not in out]
    return out


def training_extras(loader: Any, spec: BatchSpec, source: str, snapshots: Sequence[Snapshot] = (),
                    weights_only: bool = True) -> dict[str, TrainingData]:
    """``ctx.extras`` entry of ``training_influence``: ``loader`` read in a fixed order (``None``: no training data,
    ``source`` says why)."""
    if loader is None:
        return {KEY: TrainingData(None, note=source)}
    fixed, indices, note = fixed_order(loader)
    return {KEY: TrainingData(fixed, spec, indices, list(snapshots), source, note, weights_only)}
