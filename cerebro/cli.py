"""``cerebro-autopsy``: the post-training autopsy of a checkpoint, as a Hydra app (same engine as the callback).

Example::

    cerebro-autopsy checkpoint=lightning_logs/version_0/checkpoints/best.ckpt \\
        model=cerebro.demo.EEGRegressor data._target_=cerebro.demo.SyntheticEEGDataModule \\
        autopsy.max_samples=64 ~autopsy.diagnostics.gradients output_dir=autopsy_out
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cerebro.errors import CerebroConfigError
from cerebro.model_autopsy import SPLITS
from cerebro.model_source import CheckpointInfo, load_checkpoint, matching_state_dict
from cerebro.paths import config_dir
from cerebro.runner import build_config, execute, resolve_device

__all__ = ["main", "run_from_config", "build_model"]

# Keys of the autopsy group that configure the callback only, not the engine.
_CALLBACK_ONLY = ("_target_", "checkpoint", "split", "dataloader", "output_dir", "run_on", "device",
                  "every_n_epochs", "periodic_diagnostics", "periodic_max_samples")


def build_model(spec: Any, checkpoint: str, weights_only: bool = True) -> nn.Module:
    """Instantiate the module: ``{_target_: ...}`` config, or a class path built from the checkpoint's hparams."""
    if isinstance(spec, (DictConfig, dict)) and "_target_" in spec:
        return instantiate(spec)
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


def run_from_config(cfg: DictConfig) -> dict[str, Any]:
    """Run the autopsy described by a composed ``autopsy_script`` config; returns the summary."""
    ckpt = str(cfg.checkpoint)
    auto = OmegaConf.to_container(cfg.autopsy, resolve=True)
    assert isinstance(auto, dict)
    trusted = auto.get("weights_only", True) is False
    load_checkpoint(ckpt, not trusted)  # fails fast, with a clear message, on a missing or unreadable file
    split = auto.get("split", "val")
    if split not in SPLITS:
        raise CerebroConfigError(f"`autopsy.split` can be one of {list(SPLITS)}, got {split!r}")
    config = build_config(**{k: v for k, v in auto.items() if k not in _CALLBACK_ONLY})
    model = build_model(cfg.model, ckpt, weights_only=not trusted)
    matching_state_dict(model, ckpt, not trusted)  # a class that does not match its weights fails here, before any data work
    device = resolve_device(cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup({"val": "validate", "test": "test", "train": "fit"}[split])
    loader = getattr(dm, f"{split}_dataloader")()
    info = CheckpointInfo(source="path", path=ckpt)
    return execute(model, loader, config, cfg.output_dir, info, device, source=f"{split} split")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="autopsy_script")
def _main(cfg: DictConfig) -> None:
    try:
        summary = run_from_config(cfg)
    except CerebroConfigError as err:
        print(f"cerebro-autopsy: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"cerebro-autopsy: {summary['status']}"
          + (f" ({summary['reason']})" if summary.get("reason") else "")
          + f"; report: {cfg.output_dir}/report.html")
    if summary["status"] == "failed":
        sys.exit(1)


def main() -> None:
    """Console entry point of ``cerebro-autopsy``.

    ``cerebro-autopsy compare A B [--out DIR]`` compares two autopsy folders (see :mod:`cerebro.compare`; ``--out``
    defaults to ``<B>/compare_with_<name of A>``); anything else is the Hydra app.
    """
    if sys.argv[1:2] == ["compare"]:
        from cerebro.compare import run_cli

        status = run_cli(sys.argv[2:])
        if status:
            sys.exit(status)
        return
    _main()


if __name__ == "__main__":
    main()
