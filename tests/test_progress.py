"""Progress per diagnostic, consistent with the Trainer's bar: tqdm or rich on a terminal, silent otherwise."""

from __future__ import annotations

import io

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from cerebro import run_autopsy
from cerebro.report.progress import progress_for
from tests.models import TinyConv1d


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 4, 32), torch.randn(6, 1)),
                                       batch_size=3)


def test_which_bar() -> None:
    tty, pipe = _Terminal(), io.StringIO()
    off = pl.Trainer(enable_progress_bar=False, logger=False)
    tq = pl.Trainer(callbacks=[TQDMProgressBar()], logger=False)
    rich = pl.Trainer(callbacks=[RichProgressBar()], logger=False)
    assert progress_for(off, stream=tty) is None  # the Trainer's bar is off: so is ours
    assert progress_for(tq, stream=pipe) is None  # not a terminal (logs, CI)
    assert progress_for(tq, stream=tty) == "tqdm"
    assert progress_for(rich, stream=tty) == "rich"
    assert progress_for(None, stream=tty) == "tqdm" and progress_for(None, enabled=False, stream=tty) is None


def test_tqdm_progress_names_each_diagnostic(tmp_path) -> None:
    out = _Terminal()
    run_autopsy(TinyConv1d().eval(), _loader(), output_dir=tmp_path, diagnostics=["predictions", "saliency"],
                progress=True, progress_stream=out)
    text = out.getvalue()
    assert "cerebro autopsy" in text and "2/2" in text
    assert "predictions: ok" in text and "saliency: ok" in text


def test_rich_progress(tmp_path) -> None:
    from cerebro.report.progress import Progress

    out = _Terminal()
    with Progress(2, "rich", stream=out) as bar:
        bar.running("predictions")
        bar.done("predictions", "ok")
        bar.done("saliency", "failed")
    assert "2/2" in out.getvalue() and "saliency: failed" in out.getvalue()


def test_silent_by_default_when_not_a_terminal(tmp_path, capsys) -> None:
    run_autopsy(TinyConv1d().eval(), _loader(), output_dir=tmp_path, diagnostics=["predictions"])
    assert "cerebro autopsy" not in capsys.readouterr().err
