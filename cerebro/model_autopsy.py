"""The :class:`ModelAutopsy` Lightning callback: a model autopsy once training (or testing) is over."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from cerebro.config import layer_diagnostics
from cerebro.engine.distributed import Comm
from cerebro.engine.influence_data import KEY as INFLUENCE, SnapshotRecorder, training_extras
from cerebro.errors import AutopsyFailure, CerebroConfigError, choice_error
from cerebro.model_source import CHECKPOINT_CHOICES, resolve_checkpoint
from cerebro.preflight import check_target_on_batch, first_batch
from cerebro.report.progress import progress_for
from cerebro.runner import build_config, check_positive_int, execute, resolve_device
from cerebro.targets import TargetAdapter

__all__ = ["ModelAutopsy"]

log = logging.getLogger("cerebro")
SPLITS = ("val", "test", "train")
STAGES = ("fit", "test")
_CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")
#: The light autopsy run every ``every_n_epochs`` epochs.
PERIODIC_DIAGNOSTICS = ("activations", {"integrated_gradients": {"n_steps": 16}})


def _first(loader: Any) -> Any:
    """Lightning keeps one loader or a list/dict of them; the autopsy studies the first."""
    if isinstance(loader, (list, tuple)):
        return loader[0] if loader else None
    if isinstance(loader, Mapping):
        return next(iter(loader.values()), None)
    return loader


def _loop_source(trainer: pl.Trainer, split: str) -> Any:
    """Before training, the loader given to ``trainer.fit(model, train_loader, val_loader)`` for ``split`` (Lightning
    keeps it in its loops' data source, a private attribute: read guarded, ``None`` when it is not there)."""
    loop = {"val": lambda: trainer.fit_loop.epoch_loop.val_loop, "test": lambda: trainer.test_loop,
            "train": lambda: trainer.fit_loop}[split]
    try:
        instance = loop()._data_source.instance
    except AttributeError:  # another Lightning version: the autopsy checks the target after training
        return None
    if instance is None or isinstance(instance, (pl.LightningModule, pl.LightningDataModule)):
        return None  # modules and datamodules: their hooks were asked already (ModelAutopsy._loader)
    return _first(instance)


def _undistributed(loader: Any) -> Any:
    """The same samples on every rank: a DataLoader whose DistributedSampler Lightning added is rebuilt without it,
    in order, so ranks agree on the sample set and then split it among themselves without duplicates."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
        return DataLoader(loader.dataset, batch_size=loader.batch_size or 1, collate_fn=loader.collate_fn,
                          num_workers=0, shuffle=False)
    return loader


def _naming_the_option(diag: Any, message: str) -> str:
    """``message`` led by the option whose value it quotes (``layer_gradcam.layer``), so it says what to change."""
    if message.startswith("`"):
        return message
    for f in dataclasses.fields(diag.options):
        value = getattr(diag.options, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and v and repr(v) in message for v in values):
            rest = message[len(diag.name) + 2:] if message.startswith(f"{diag.name}: ") else message
            return f"`{diag.name}.{f.name}`: {rest}"
    return message if message.startswith(diag.name) else f"{diag.name}: {message}"


class ModelAutopsy(Callback):
    r"""Run a model autopsy (attributions and health diagnostics) after ``trainer.fit`` and/or ``trainer.test``.

    Every argument is validated here, and the ones that need the model (layer names) in :meth:`setup`, so a typo
    fails before training starts. An autopsy that fails at run time is recorded in ``summary.json`` and never
    breaks the training run, its checkpoints or its logs, unless ``fail_on_error=True``.

    Args:
        diagnostics: names or ``{name: {options}}`` entries, or a ``{name: options}`` mapping (default: the six
            core diagnostics: predictions, gradients, activations, failure_modes, integrated_gradients,
            layer_gradcam). With ``preset_diagnostics``, the changes to the preset: a mapping is merged onto it
            (``name: false`` switches one off), a list runs exactly what it lists, each entry with the preset's
            options for it overlaid by its own (:func:`cerebro.config.layer_diagnostics`).
        checkpoint: ``"best"`` (the ModelCheckpoint's best), ``"last"``, ``"live"`` or a checkpoint path. Weights
            are loaded into a private copy of the module; without a checkpoint the live module is used and
            ``checkpoint.fallback_reason`` says why.
        target: ``"regression"``, ``"classification"`` or ``{kind: ..., ...}`` (see :mod:`cerebro.targets`).
        split: which of the Trainer's dataloaders supplies the samples: ``val``, ``test`` or ``train``.
        dataloader: an explicit loader, overriding ``split``.
        max_samples: number of samples studied.
        batch_size: samples per forward pass (default: the loader's batch size).
        output_dir: report folder (default ``<trainer.log_dir or default_root_dir>/autopsy``).
        run_on: stages after which the autopsy runs: ``"fit"`` and/or ``"test"``.
        fail_on_error: strict mode, for CI: a failed autopsy or diagnostic raises.
        seed: seed of ``sampling="random"``.
        device: where the autopsy runs: the device training used (default), ``"auto"`` (cuda, then mps, then
            cpu) or a torch device.
        sampling: ``"first"`` samples in order or a seeded ``"random"`` draw.
        input_key / target_key: where input and label sit in a batch (tuple positions or dict keys).
        memory_budget_mb: activation memory per attribution pass (default: automatic).
        eeg: ``{channel_names, sfreq, montage}`` of ``(C, T)`` inputs (names on the bars, seconds on the time
            axis, scalp topomaps with ``cerebro[eeg]``); checked here, and against the samples' shape later.
        every_n_epochs: also run a light autopsy of the live module every k training epochs (after validation,
            on the same split), into ``<output_dir>/epochs/epoch_<k>``; the final report shows the attribution
            drift and dead-unit fraction over these epochs. ``None`` = off.
        periodic_diagnostics: the diagnostics of the periodic autopsies (default: activations and
            integrated_gradients with 16 steps).
        periodic_max_samples: samples studied by each periodic autopsy.
        time_budget_s / total_time_budget_s: seconds one diagnostic / the whole autopsy may take (a diagnostic
            past its budget is ``failed`` with the reason; the others still run).
        resume: re-running into the same folder on the same checkpoint file skips diagnostics already finished.
        output_key: position, key or attribute of the prediction when the model returns a tuple, dict or output
            object (e.g. ``"logits"`` of a Hugging Face ``ModelOutput``).
        weights_only: load checkpoints with ``torch.load(weights_only=True)``; ``False`` only for files you trust
            (unpickling runs code named in the file).
        tokens: token-id inputs (integer batches): ``{embedding: auto | name, baseline: pad | mask | zeros | <id>,
            per_dimension: bool}``; gradient methods attribute at the embedding output, one value per token.
        preset_diagnostics: a preset's ``{name: options}`` mapping that ``diagnostics`` is laid over (the Hydra
            configs' ``autopsy/preset_diagnostics`` group); ``None`` = ``diagnostics`` alone.
    """

    def __init__(
        self,
        diagnostics: Any = None,
        checkpoint: str = "best",
        target: str | Mapping[str, Any] | TargetAdapter = "regression",
        split: str = "val",
        dataloader: Iterable[Any] | None = None,
        max_samples: int = 256,
        batch_size: int | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        run_on: str | Iterable[str] = ("fit",),
        fail_on_error: bool = False,
        seed: int = 0,
        device: str | torch.device | None = None,
        sampling: str = "first",
        input_key: int | str | None = None,
        target_key: int | str | None = None,
        memory_budget_mb: float | None = None,
        eeg: Any = None,
        every_n_epochs: int | None = None,
        periodic_diagnostics: Any = None,
        periodic_max_samples: int = 32,
        time_budget_s: float | None = None,
        total_time_budget_s: float | None = None,
        resume: bool = True,
        output_key: int | str | None = None,
        weights_only: bool = True,
        tokens: Any = None,
        preset_diagnostics: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise CerebroConfigError(f"`checkpoint` can be {list(CHECKPOINT_CHOICES)} or a path, got {checkpoint!r}")
        checkpoint = os.fspath(checkpoint)
        if checkpoint not in CHECKPOINT_CHOICES and not (
            os.path.isfile(checkpoint) or checkpoint.endswith(_CKPT_SUFFIXES)
        ):
            raise choice_error("checkpoint", checkpoint, [*CHECKPOINT_CHOICES, "<path to .ckpt/.pt>"])
        if split not in SPLITS:
            raise choice_error("split", split, SPLITS)
        if isinstance(run_on, (bytes, Mapping)) or not isinstance(run_on, (str, Iterable)):
            raise CerebroConfigError(f"`run_on` must be 'fit', 'test' or a list of them, got {run_on!r}")
        stages = (run_on,) if isinstance(run_on, str) else tuple(run_on)
        if not stages:
            raise CerebroConfigError(f"`run_on` needs at least one of {list(STAGES)}")
        for stage in stages:
            if stage not in STAGES:
                raise choice_error("run_on", stage, STAGES)
        if output_dir is not None and not isinstance(output_dir, (str, os.PathLike)):
            raise CerebroConfigError(f"`output_dir` must be a path or None, got {output_dir!r}")
        if device is not None:
            resolve_device(device)
        self.config = build_config(layer_diagnostics(diagnostics, preset_diagnostics), target, max_samples,
                                   batch_size, sampling, seed, fail_on_error,
                                   input_key, target_key, memory_budget_mb, eeg, time_budget_s,
                                   total_time_budget_s, resume, output_key, weights_only, tokens)
        check_positive_int("every_n_epochs", every_n_epochs, allow_none=True)
        check_positive_int("periodic_max_samples", periodic_max_samples)
        self.every_n_epochs = every_n_epochs
        self.periodic_config = None if every_n_epochs is None else build_config(
            PERIODIC_DIAGNOSTICS if periodic_diagnostics is None else periodic_diagnostics, target,
            periodic_max_samples, batch_size, sampling, seed, fail_on_error, input_key, target_key, memory_budget_mb,
            eeg, time_budget_s, total_time_budget_s, resume=False, output_key=output_key, tokens=tokens)
        self.checkpoint = checkpoint
        self.split = split
        self.dataloader = dataloader
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.run_on = stages
        self.device = device
        self.runs: list[dict[str, Any]] = []
        self.last_summary: dict[str, Any] | None = None
        self._train_device: torch.device | None = None
        self._target_checked = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(split=self.split, run_on=self.run_on)

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Checks that need the module (layer names) or the file system run here: before the first training step."""
        if self.checkpoint not in CHECKPOINT_CHOICES and not os.path.isfile(self.checkpoint):
            raise CerebroConfigError(
                f"`checkpoint` {self.checkpoint!r} is not a file (relative paths start in {os.getcwd()}): name an "
                f"existing .ckpt/.pt file, or one of {list(CHECKPOINT_CHOICES)} for this training's own checkpoints")
        for diag in [*self.config.diagnostics, *(self.periodic_config.diagnostics if self.periodic_config else [])]:
            try:
                diag.check_model(pl_module)
            except CerebroConfigError as err:
                raise CerebroConfigError(_naming_the_option(diag, str(err))) from None
        if not self._target_checked:
            self._target_checked = True
            self._check_target(trainer, pl_module)
        self._influence_setup(pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_device = pl_module.device

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After this epoch's validation, in the training context (gradients on, not inference mode).
        self._influence_snapshot(trainer, pl_module)
        k = self.every_n_epochs
        if k is None or trainer.sanity_checking or (trainer.current_epoch + 1) % k:
            return
        out = self._output_dir(trainer, "fit") / "epochs" / f"epoch_{trainer.current_epoch:03d}"
        self._run(trainer, pl_module, "epoch", config=self.periodic_config, out=out, checkpoint="live")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after every checkpoint callback finished (EarlyStopping included), whatever the callback order.
        # The strategy has moved the module to the CPU by now; the autopsy moves its copy to the training device.
        if "fit" in self.run_on:
            self._run(trainer, pl_module, "fit")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" in self.run_on:
            self._run(trainer, pl_module, "test")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Training failed: no autopsy of a half-trained module, and nothing here may mask the original error.
        try:
            self.runs.append({"stage": "exception", "status": "not run",
                              "reason": f"training stopped by {type(exception).__name__}: {exception}"[:500]})
            log.info("cerebro: no autopsy, training stopped by %s", type(exception).__name__)
        except Exception:  # noqa: BLE001, S110 - never replace the user's exception with ours
            pass

    def state_dict(self) -> dict[str, Any]:
        return {"runs": [dict(r) for r in self.runs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.runs = [dict(r) for r in state_dict.get("runs", [])]

    # -- internals ------------------------------------------------------------------------------------------------
    def _check_target(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The target (and input_key/target_key/output_key) on one real batch of the split, before training
        (:mod:`cerebro.preflight`). A loader or forward pass that does not work yet (e.g. layers built in
        ``configure_model``) is left for the autopsy to report; only a target that does not fit raises here."""
        try:
            loader, _ = self._loader(trainer, pl_module)
            loader = loader if loader is not None else _loop_source(trainer, self.split)
            batch = None if loader is None else first_batch(loader)
        except Exception as err:  # noqa: BLE001 - the split may not exist before training; the autopsy says so
            log.debug("cerebro: no %s batch before training (%s); the target is checked by the autopsy", self.split, err)
            return
        if batch is None:
            return
        try:
            check_target_on_batch(pl_module, batch, self.config.batch, self.config.target, self.config.output_key)
        except CerebroConfigError as err:
            msg = str(err)
            raise CerebroConfigError(msg if msg.startswith("`") else
                                     f"`target` ({self.config.target.kind}) on the first {self.split} batch: {msg}") from None
        except Exception as err:  # noqa: BLE001 - e.g. a model that only runs on its training device
            log.debug("cerebro: target not checked before training: %s", err)

    def _loader(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[Any, str]:
        if self.dataloader is not None:
            return self.dataloader, "dataloader"
        attr = {"val": "val_dataloaders", "test": "test_dataloaders", "train": "train_dataloader"}[self.split]
        loader = _first(getattr(trainer, attr, None))
        if loader is None:
            source = trainer.datamodule if getattr(trainer, "datamodule", None) is not None else pl_module
            hook = f"{self.split}_dataloader"
            try:
                loader = _first(getattr(source, hook)())
            except Exception as err:  # noqa: BLE001 - the module/datamodule does not define that split
                log.debug("cerebro: %s.%s() unavailable: %s", type(source).__name__, hook, err)
                loader = None
        return loader, f"{self.split} split"

    def _output_dir(self, trainer: pl.Trainer, stage: str) -> Path:
        root = Path(self.output_dir) if self.output_dir else Path(trainer.log_dir or trainer.default_root_dir) / "autopsy"
        return root if stage == self.run_on[0] else root.with_name(f"{root.name}_{stage}")

    def _history(self) -> list[tuple[int, str]]:
        """``(epoch, folder)`` of the periodic autopsies so far (kept in the callback's state across resumes)."""
        return [(r["epoch"], r["output_dir"]) for r in self.runs if r["stage"] == "epoch" and r["status"] != "failed"]

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, config: Any = None,
             out: Path | None = None, checkpoint: str | None = None) -> None:
        # Under DDP every rank takes part (each computes its share of the attributions; rank 0 writes the report).
        comm = Comm.current()
        if comm.world == 1 and not trainer.is_global_zero:
            return
        config = config or self.config
        out = out or self._output_dir(trainer, stage)
        history = self._history() if stage == "fit" else []
        try:
            info = resolve_checkpoint(trainer, checkpoint or self.checkpoint)
            if info.fallback_reason:
                rank_zero_warn(f"cerebro: {info.fallback_reason}")
            loader, source = self._loader(trainer, pl_module)
            if loader is None:
                loader, source = [], f"{self.split} split (the Trainer, datamodule and module provide no such dataloader)"
            elif comm.world > 1:
                loader = _undistributed(loader)
            device = resolve_device(self.device) if self.device is not None else (self._train_device or pl_module.device)
            summary = execute(pl_module, loader, config, out, info, device, source=source,
                              loggers=trainer.loggers, step=trainer.global_step, comm=comm, history=history,
                              progress=progress_for(trainer), announce=stage != "epoch",
                              extras=None if stage == "epoch" else self._influence_extras(trainer, pl_module))
        except AutopsyFailure:
            raise
        except Exception as err:  # noqa: BLE001 - never break the user's run unless strict
            if config.fail_on_error:
                raise AutopsyFailure(f"cerebro autopsy failed: {err}") from err
            log.warning("cerebro: autopsy after %s failed: %s", stage, err)
            summary = {"status": "failed", "reason": str(err)}
        self.last_summary = summary
        self.runs.append({"stage": stage, "status": summary["status"], "output_dir": str(out),
                          **({"epoch": trainer.current_epoch} if stage == "epoch" else {})})
        log.info("cerebro: autopsy after %s: %s, report at %s", stage, summary["status"], out / "report.html")

    # -- training_influence (TracIn): snapshots during training, the training data afterwards ----------------------
    def _influence_diag(self) -> Any:
        return next((d for d in self.config.diagnostics if d.name == INFLUENCE), None)

    def _influence_setup(self, pl_module: pl.LightningModule, stage: str) -> None:
        """Which parameters to snapshot (the final layer, or all), when training_influence uses the callback's own;
        a new fit starts a new series."""
        diag = self._influence_diag()
        if diag is not None and diag.options.checkpoints is None and (
                stage == "fit" or getattr(self, "_influence", None) is None):
            self._influence = SnapshotRecorder(diag.tracked(pl_module), diag.options.snapshots)

    def _influence_snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A CPU copy of the tracked parameters and the epoch's learning rate, every ``snapshots`` epochs."""
        recorder = getattr(self, "_influence", None)
        if recorder is not None and not trainer.sanity_checking:
            recorder.maybe_keep(pl_module, trainer.current_epoch, trainer.optimizers)

    def _influence_extras(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
        """The training data in a fixed order for training_influence (read later, under the autopsy's preserved
        random state), from the loaders given to fit, else the datamodule's or module's train_dataloader."""
        if self._influence_diag() is None:
            return None
        loader, source = _first(getattr(trainer, "train_dataloader", None)), "the training loader of fit"
        if loader is None:
            owner = trainer.datamodule if getattr(trainer, "datamodule", None) is not None else pl_module
            try:
                loader, source = _first(owner.train_dataloader()), f"{type(owner).__name__}.train_dataloader()"
            except Exception as err:  # noqa: BLE001 - said by the diagnostic: no training data reachable
                log.debug("cerebro: no train_dataloader for training_influence: %s", err)
        recorder = getattr(self, "_influence", None)
        if loader is None:
            source = "the Trainer, datamodule and module give no train_dataloader"
        return training_extras(loader, self.config.batch, source, recorder.snapshots if recorder else (),
                               self.config.weights_only)
