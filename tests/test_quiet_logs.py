"""Quiet logs: the demo shows Lightning's progress bar only on a terminal, so a piped or redirected run writes no bar
updates (tqdm's carriage returns, rich's "it/s") into the log."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from cerebro.demo.run import trainer_options


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_follows_the_terminal_unless_the_config_sets_it() -> None:
    auto = OmegaConf.create({"max_epochs": 1, "enable_progress_bar": None})
    assert trainer_options(auto, (_Terminal(), _Terminal())) == {"max_epochs": 1, "enable_progress_bar": True}
    assert trainer_options(auto, (io.StringIO(), _Terminal()))["enable_progress_bar"] is False  # stdout to a file
    assert trainer_options(auto, (_Terminal(), io.StringIO()))["enable_progress_bar"] is False  # stderr to a file
    assert trainer_options(OmegaConf.create({}), (io.StringIO(),)) == {"enable_progress_bar": False}
    for value in (True, False):  # the user's explicit choice wins either way
        cfg = OmegaConf.create({"enable_progress_bar": value})
        assert trainer_options(cfg, (_Terminal(),))["enable_progress_bar"] is value
        assert trainer_options(cfg, (io.StringIO(),))["enable_progress_bar"] is value


def test_demo_piped_to_a_file_writes_no_progress_bar(tmp_path: Path) -> None:
    """The demo's own entry point (``python -m cerebro.demo.run``, what ``scripts/demo.sh`` runs), shrunk to one
    epoch on a few small windows, with stdout and stderr to pipes."""
    overrides = [f"root_dir={tmp_path / 'run'}", "data.n_train=64", "data.n_val=16", "data.n_test=16",
                 "data.n_chans=8", "data.n_times=128", "data.batch_size=16", "trainer.max_epochs=1",
                 "trainer.accelerator=cpu", "autopsy.max_samples=8", "autopsy.diagnostics.sanity_checks.samples=2"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "cerebro.demo.run", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "\r" not in log and "it/s" not in log and "Epoch 0" not in log, log[:3000]
    summary = json.loads((tmp_path / "run" / "autopsy" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["n_samples"] == 8
    assert f"report: {(tmp_path / 'run' / 'autopsy' / 'report.html').resolve()}" in done.stdout
    assert "autopsy status: " in done.stdout and "integrated_gradients" in done.stdout
