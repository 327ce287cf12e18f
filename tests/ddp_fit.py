"""Train and autopsy under strategy="ddp" on 2 CPU processes (Lightning relaunches this script for rank 1).

Usage: python tests/ddp_fit.py OUTPUT_DIR   (used by tests/test_ddp.py)
"""

import sys
from datetime import timedelta

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from cerebro import ModelAutopsy
from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

# layer_gradcam in fp32 on every host: the DDP run is compared with a single process at float32 tolerance, and on a
# CPU with AMX precision auto could run later chunks in bf16 (tests/conftest.py pins auto only in-process)
DIAGNOSTICS = ["predictions", "failure_modes", {"integrated_gradients": {"n_steps": 8}},
               {"layer_gradcam": {"precision": "fp32"}}]


def main(out: str) -> None:
    pl.seed_everything(0, verbose=False)
    dm = SyntheticEEGDataModule(n_train=32, n_val=21, n_test=8, n_chans=8, n_times=128, batch_size=8)
    autopsy = ModelAutopsy(output_dir=f"{out}/autopsy", max_samples=21, diagnostics=DIAGNOSTICS)
    trainer = pl.Trainer(strategy=DDPStrategy(timeout=timedelta(seconds=120)), accelerator="cpu", devices=2,
                         max_epochs=2, default_root_dir=out, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ModelCheckpoint(monitor="val_loss"), autopsy])
    trainer.fit(EEGRegressor(n_chans=8, n_times=128), datamodule=dm)


if __name__ == "__main__":
    main(sys.argv[1])
