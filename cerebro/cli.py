"""``cerebro-autopsy``: the post-training autopsy of a checkpoint, configured like a Hydra app (same engine as the
callback). Run ``cerebro-autopsy --help`` for the usage; ``python -m cerebro.cli`` is the same program.

Example::

    cerebro-autopsy checkpoint=lightning_logs/version_0/checkpoints/best.ckpt \\
        model=cerebro.demo.EEGRegressor data._target_=cerebro.demo.SyntheticEEGDataModule \\
        autopsy.max_samples=64 ~autopsy.diagnostics.gradients output_dir=autopsy_out
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from cerebro.config import diagnostics_overrides, layer_diagnostics
from cerebro.errors import CerebroConfigError
from cerebro.model_autopsy import SPLITS
from cerebro.model_source import CheckpointInfo, load_checkpoint, matching_state_dict
from cerebro.paths import config_dir
from cerebro.runner import build_config, execute, resolve_device

__all__ = ["main", "run_from_config", "build_model", "USAGE"]

USAGE = """\
usage: cerebro-autopsy checkpoint=FILE model=CLASS_OR_CONFIG data=DATAMODULE_CONFIG [key=value ...]
       cerebro-autopsy compare A B [--out DIR]
       cerebro-autopsy --help | --cfg [key=value ...]

Post-training model autopsy of a Lightning checkpoint: Captum attributions and health diagnostics, written as
summary.json, report.html, figures/ and arrays/ (the same engine and files as the cerebro.ModelAutopsy callback).
Arguments are Hydra overrides of the `autopsy_script` config (cerebro's configs/autopsy_script.yaml).

required:
  checkpoint=FILE          the .ckpt (or state_dict .pt) to study; quote paths with '=' in them:
                           checkpoint="'lightning_logs/version_0/checkpoints/epoch=9-step=160.ckpt'"
  model=CLASS              a LightningModule class path, built from the checkpoint's hyper_parameters,
                           or model="{_target_: my_pkg.MyModule, hidden: 64}" with its arguments
  data=CONFIG              a LightningDataModule config: data="{_target_: my_pkg.MyDataModule, batch_size: 64}"

options:
  output_dir=DIR           report folder (default: autopsy)
  device=auto|cpu|cuda[:k]|mps  where to run (default auto: cuda, then mps, then cpu)
  autopsy=NAME             the preset: default, eeg_regression (the default here), attribution_family,
                           transformer, or a YAML of your own in autopsy/ of a Hydra search path
  autopsy.KEY=VALUE        any option of the preset, e.g. autopsy.max_samples=512 autopsy.split=test
                           autopsy.target=classification autopsy.diagnostics.integrated_gradients.n_steps=16
  ~autopsy.diagnostics.X   drop diagnostic X (or autopsy.diagnostics.X=false)
  'autopsy.diagnostics=[predictions,{integrated_gradients:{n_steps:16}}]'
                           run exactly these diagnostics, in this order, each with the preset's options
                           overlaid by the ones given
  autopsy/preset_diagnostics=NAME
                           another preset's diagnostics, e.g. autopsy/preset_diagnostics=attribution_family
  --cfg                    print the composed configuration and exit
  -h, --help               show this message and exit

compare:
  cerebro-autopsy compare A B [--out DIR]   two autopsy folders side by side (metric deltas B - A, map
                           similarity, changed flags) in compare.json and compare.html (default DIR:
                           B/compare_with_<name of A>)

Classes and functions named in model=, data= and _target_ are imported from the current folder first, as with
`python -m`. Exit status: 0 ok, 1 the autopsy failed (see summary.json), 2 a configuration error.

examples:
  cerebro-autopsy checkpoint=runs/best.ckpt model=my_pkg.MyLightningModule \\
      data="{_target_: my_pkg.MyDataModule, batch_size: 64}" output_dir=autopsy_best
  cerebro-autopsy checkpoint=runs/best.ckpt model=my_pkg.Net data._target_=my_pkg.Data \\
      autopsy=attribution_family autopsy.max_samples=64 ~autopsy.diagnostics.gradients
  cerebro-autopsy compare autopsy_epoch3 autopsy_best
"""

#: What to write instead of a required value that was left out.
_REQUIRED = {
    "checkpoint": "checkpoint=path/to/best.ckpt (the checkpoint file to study)",
    "model": "model=my_pkg.MyLightningModule (a class path) or model=\"{_target_: my_pkg.MyModule, ...}\"",
    "data": "data=\"{_target_: my_pkg.MyDataModule, batch_size: 64}\" (a LightningDataModule config)",
}

# Keys of the autopsy group that configure the callback only, not the engine.
_CALLBACK_ONLY = ("_target_", "checkpoint", "split", "dataloader", "output_dir", "run_on", "device",
                  "every_n_epochs", "periodic_diagnostics", "periodic_max_samples")


def build_model(spec: Any, checkpoint: str, weights_only: bool = True) -> nn.Module:
    """Instantiate the module: ``{_target_: ...}`` config, or a class path built from the checkpoint's hparams."""
    if isinstance(spec, (DictConfig, dict)) and "_target_" in spec:
        return _instantiate("model", spec)
    if not isinstance(spec, str):
        raise CerebroConfigError(f"`model` must be a class path or a config with _target_, got {spec!r}")
    try:
        cls = get_class(spec)
    except Exception as err:  # noqa: BLE001 - hydra raises several types for bad paths
        raise CerebroConfigError(f"`model` class {spec!r} cannot be imported: {err}") from err
    hparams = load_checkpoint(checkpoint, weights_only).get("hyper_parameters") or {}
    if isinstance(hparams, DictConfig):
        hparams = OmegaConf.to_container(hparams, resolve=True)
    try:
        return cls(**dict(hparams))
    except TypeError as err:
        raise CerebroConfigError(
            f"cannot build {spec} from the checkpoint's hyper_parameters {sorted(hparams)}: {err}; "
            "give model as a config with _target_ and its arguments instead"
        ) from err


def _instantiate(what: str, spec: Any) -> Any:
    """``hydra.utils.instantiate`` with one config error naming the option (``model`` or ``data``) on failure."""
    try:
        return instantiate(spec)
    except InstantiationException as err:
        cause = err.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(err).splitlines()[0]
        raise CerebroConfigError(f"`{what}` {OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec!r} "
                                 f"cannot be built: {detail.splitlines()[0]}") from err


def _required(cfg: DictConfig) -> None:
    """A config error naming the argument to add for each required value left out (``???``)."""
    missing = [k for k in _REQUIRED if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise CerebroConfigError(f"missing {', '.join(k + '=' for k in missing)}: add "
                                 + "; ".join(_REQUIRED[k] for k in missing) + " (see cerebro-autopsy --help)")


def run_from_config(cfg: DictConfig) -> dict[str, Any]:
    """Run the autopsy described by a composed ``autopsy_script`` config; returns the summary."""
    _required(cfg)
    ckpt = str(cfg.checkpoint)
    try:
        auto = OmegaConf.to_container(cfg.autopsy, resolve=True)
    except OmegaConfBaseException as err:
        raise CerebroConfigError(f"`autopsy`: {str(err).splitlines()[0]}") from None
    assert isinstance(auto, dict)
    trusted = auto.get("weights_only", True) is False
    load_checkpoint(ckpt, not trusted)  # fails fast, with a clear message, on a missing or unreadable file
    split = auto.get("split", "val")
    if split not in SPLITS:
        raise CerebroConfigError(f"`autopsy.split` can be one of {list(SPLITS)}, got {split!r}")
    auto["diagnostics"] = layer_diagnostics(auto.get("diagnostics"), auto.pop("preset_diagnostics", None))
    config = build_config(**{k: v for k, v in auto.items() if k not in _CALLBACK_ONLY})
    model = build_model(cfg.model, ckpt, weights_only=not trusted)
    matching_state_dict(model, ckpt, not trusted)  # a class that does not match its weights fails here, before any data work
    device = resolve_device(cfg.get("device") or "auto")
    if not isinstance(cfg.data, DictConfig) or "_target_" not in cfg.data:
        raise CerebroConfigError(f"`data` must be a config with _target_, got {cfg.data!r}: add {_REQUIRED['data']}")
    dm = _instantiate("data", cfg.data)
    dm.prepare_data()
    dm.setup({"val": "validate", "test": "test", "train": "fit"}[split])
    loader = getattr(dm, f"{split}_dataloader")()
    info = CheckpointInfo(source="path", path=ckpt)
    extras = _influence_extras(dm, config, split)  # issue 22: training_influence's training data
    return execute(model, loader, config, cfg.output_dir, info, device, source=f"{split} split", extras=extras)


def _influence_extras(dm: Any, config: Any, split: str) -> dict[str, Any] | None:
    """The datamodule's training data in a fixed order, when training_influence runs (its checkpoints come from
    ``autopsy.diagnostics.training_influence.checkpoints``: a list or a glob)."""
    from cerebro.engine.influence_data import KEY, training_extras

    if not any(d.name == KEY for d in config.diagnostics):
        return None
    try:
        if split != "train":
            dm.setup("fit")
        loader, source = dm.train_dataloader(), f"{type(dm).__name__}.train_dataloader()"
    except Exception as err:  # noqa: BLE001 - said by the diagnostic: no training data reachable
        loader, source = None, f"{type(dm).__name__}.train_dataloader() failed: {err}"
    return training_extras(loader, config.batch, source, weights_only=config.weights_only)


def _compose(overrides: list[str]) -> DictConfig:
    """The ``autopsy_script`` config with the command line's overrides (their ``autopsy.diagnostics`` shorthands
    spelled out by :func:`cerebro.config.diagnostics_overrides`); Hydra's errors become config errors."""
    overrides = diagnostics_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="cerebro-autopsy"):
            return compose(config_name="autopsy_script", overrides=overrides)
    except ValueError as err:  # OmegaConf.update of a key inside a list: int('gradients')
        if not any(o.lstrip("+~").startswith("autopsy.diagnostics.") for o in overrides):
            raise
        raise CerebroConfigError(
            f"autopsy.diagnostics is a list here ({err}): write each diagnostic's options in the list, "
            "'autopsy.diagnostics=[predictions,{integrated_gradients:{n_steps:16}}]', or edit the mapping form with "
            "autopsy.diagnostics.NAME.KEY=VALUE without a list (see cerebro-autopsy --help)") from None
    except (HydraException, OmegaConfBaseException) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        cause = err.__cause__
        if cause is not None and str(cause).strip():  # e.g. "Key 'foo' is not in struct" under "Could not override"
            lines.append(str(cause).strip().splitlines()[0])
        text = " ".join(dict.fromkeys(ln for ln in lines if not ln.startswith("See https://")))
        if "Cannot merge" in text and "diagnostics" in " ".join(overrides):
            text = ("a list and a mapping of autopsy.diagnostics cannot be merged: give one form, or replace the "
                    "earlier one with ~autopsy.diagnostics '+autopsy.diagnostics=[predictions,saliency]'")
        raise CerebroConfigError(f"{text[:600]} (see cerebro-autopsy --help)") from None


def _run(argv: list[str]) -> int:
    if "--cfg" in argv:
        print(OmegaConf.to_yaml(_compose([a for a in argv if a != "--cfg"])), end="")
        return 0
    cfg = _compose(argv)
    summary = run_from_config(cfg)
    print(f"cerebro-autopsy: {summary['status']}"
          + (f" ({summary['reason']})" if summary.get("reason") else "")
          + f"; report: {os.path.join(str(cfg.output_dir), 'report.html')}")
    return 1 if summary["status"] == "failed" else 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cerebro-autopsy`` (also ``python -m cerebro.cli``).

    ``cerebro-autopsy compare A B [--out DIR]`` compares two autopsy folders (see :mod:`cerebro.compare`; ``--out``
    defaults to ``<B>/compare_with_<name of A>``); ``--help`` prints :data:`USAGE`; anything else is a list of
    Hydra overrides of the ``autopsy_script`` config. Configuration errors are one line on stderr and exit
    status 2, never a traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # Like `python -m`: model=/data=/_target_ classes of the user's own project import from the current folder.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if argv[:1] == ["compare"]:
        from cerebro.compare import run_cli

        status = run_cli(argv[1:])
    elif {"-h", "--help", "--hydra-help"} & set(argv):
        print(USAGE, end="")
        status = 0
    else:
        unknown = [a for a in argv if a.startswith("-") and a != "--cfg"]
        bare = [a for a in argv if not a.startswith(("-", "~")) and "=" not in a]
        try:
            if unknown:
                raise CerebroConfigError(f"unknown option {unknown[0]!r}: arguments are key=value overrides, "
                                         "--cfg or --help (see cerebro-autopsy --help)")
            if bare:
                example = _REQUIRED.get(bare[0], f"{bare[0]}=VALUE")
                raise CerebroConfigError(f"argument {bare[0]!r} has no value: write {example} "
                                         "(see cerebro-autopsy --help)")
            status = _run(argv)
        except CerebroConfigError as err:
            print(f"cerebro-autopsy: error: {err}", file=sys.stderr)
            status = 2
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
