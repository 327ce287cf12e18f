"""``cerebro-demo``: train the demo regressor on synthetic EEG, run the autopsy, print where the report is."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cerebro.config import diagnostics_overrides
from cerebro.demo.data import PLANTED_CHANNELS, PLANTED_WINDOW
from cerebro.paths import config_dir
from cerebro.report.findings import display_status

__all__ = ["main"]


def planted_share(attributions: np.ndarray) -> tuple[float, float]:
    """Share of mean |IG| inside the planted channels x window, and that region's share of the input area."""
    a = np.abs(attributions).mean(axis=0)
    lo, hi = PLANTED_WINDOW
    inside = a[list(PLANTED_CHANNELS), lo:hi].sum()
    return float(inside / a.sum()), len(PLANTED_CHANNELS) * (hi - lo) / a.size


def trainer_options(trainer: DictConfig, streams: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """The config's ``trainer`` options for ``lightning.pytorch.Trainer``. ``enable_progress_bar: null`` (the demo's
    default) shows Lightning's progress bar only when ``streams`` (default: stdout, where Lightning's bars write,
    and stderr) are all terminals: piped or redirected to a file or a CI log, the demo writes no bar updates.
    ``true``/``false`` set it either way."""
    options = OmegaConf.to_container(trainer, resolve=True)
    assert isinstance(options, dict)
    if options.get("enable_progress_bar") is None:
        streams = (sys.stdout, sys.stderr) if streams is None else streams
        options["enable_progress_bar"] = all(getattr(s, "isatty", lambda: False)() for s in streams)
    return options


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="demo")
def _main(cfg: DictConfig) -> None:
    pl.seed_everything(cfg.seed, verbose=False)
    autopsy = instantiate(cfg.autopsy)
    trainer = pl.Trainer(
        default_root_dir=cfg.root_dir,
        callbacks=[ModelCheckpoint(monitor="val_loss", filename="best"), autopsy],
        logger=pl.loggers.CSVLogger(cfg.root_dir, name="logs"),
        enable_model_summary=False,
        **trainer_options(cfg.trainer),
    )
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    out = Path(cfg.autopsy.output_dir)
    summary = json.loads((out / "summary.json").read_text())
    print(f"\nautopsy status: {display_status(summary)}  checkpoint: {summary['checkpoint']['path']}")
    for name, rec in summary["diagnostics"].items():
        print(f"  {name:22s} {rec['status']:8s} {rec['seconds']:6.2f}s  {'; '.join(rec['flags'])}")
    metrics = summary["diagnostics"].get("predictions", {}).get("metrics", {})
    if metrics.get("nrmse") is not None:
        print(f"nRMSE {metrics['nrmse']:.3f} (mean predictor 1.000), R^2 {metrics['r2']:.3f}")
    ig = out / "arrays" / "integrated_gradients" / "attributions.npy"
    if ig.exists():
        share, area = planted_share(np.load(ig, mmap_mode="r"))
        print(f"IG mass in the planted channels x window: {share:.1%} (area share {area:.1%}, {share / area:.1f}x)")
    for f in summary.get("findings") or []:
        print(f"  [{f['severity']}] {f['text']}")
    print(f"report: {(out / 'report.html').resolve()}")


def main() -> None:
    """Console entry point of ``cerebro-demo`` (the command line's ``autopsy.diagnostics`` shorthands spelled out)."""
    sys.argv[1:] = diagnostics_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
