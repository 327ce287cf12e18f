"""Progress of an autopsy, one step per diagnostic, in the style of the Trainer's own progress bar.

``rich`` when the Trainer uses Lightning's ``RichProgressBar``, else ``tqdm`` (a Lightning dependency): in a Jupyter
kernel a notebook widget (``tqdm.auto``, when ``ipywidgets`` is installed; else tqdm's text bar in the cell's
output). Silent when the Trainer's progress bar is off, or when the output is neither a terminal nor a notebook
(logs, CI, a redirected stream).
"""

from __future__ import annotations

import sys
from typing import IO, Any

__all__ = ["Progress", "progress_for", "in_notebook"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ``ZMQInteractiveShell``): its cells show widgets."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _widgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


class Progress:
    """``with Progress(total, kind) as p: p.step(name)`` (``kind``: ``"tqdm"``, ``"rich"`` or ``None`` = silent)."""

    def __init__(self, total: int, kind: str | None = "tqdm", stream: IO[str] | None = None) -> None:
        self.total, self.kind, self.stream = total, kind, stream
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.kind == "rich":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream) if self.stream is not None else None
            self._bar = RichProgress(TextColumn("cerebro autopsy: {task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("starting", total=self.total)
        elif self.kind == "tqdm":
            if self.stream is None and in_notebook() and _widgets():
                from tqdm.auto import tqdm  # the notebook widget
            else:
                from tqdm import tqdm  # text (tqdm.auto without ipywidgets in a kernel raises "IProgress not found")

            self._bar = tqdm(total=self.total, desc="cerebro autopsy", unit="diagnostic", file=self.stream or sys.stderr,
                             leave=True, dynamic_ncols=True)
        return self

    def running(self, name: str) -> None:
        """Show the diagnostic that is running now."""
        if self.kind == "rich" and self._bar is not None:
            self._bar.update(self._task, description=name)
        elif self.kind == "tqdm" and self._bar is not None:
            self._bar.set_postfix_str(name)

    def done(self, name: str, status: str) -> None:
        """One diagnostic finished with ``status``."""
        if self.kind == "rich" and self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{name}: {status}")
        elif self.kind == "tqdm" and self._bar is not None:
            self._bar.set_postfix_str(f"{name}: {status}")
            self._bar.update(1)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            (self._bar.stop if self.kind == "rich" else self._bar.close)()


def progress_for(trainer: Any = None, enabled: bool | None = None, stream: IO[str] | None = None) -> str | None:
    """Which bar to show: ``None`` (silent) when ``enabled`` is False, the Trainer's bar is off, or ``stream``
    (default stderr) is not a terminal, unless that default stream is a Jupyter kernel's; ``"rich"`` beside a
    ``RichProgressBar``; else ``"tqdm"`` (a widget in notebooks)."""
    if enabled is False:
        return None
    if trainer is not None and getattr(trainer, "progress_bar_callback", None) is None:
        return None
    interactive = getattr(stream or sys.stderr, "isatty", lambda: False)() or (stream is None and in_notebook())
    if enabled is None and not interactive:
        return None
    callback = getattr(trainer, "progress_bar_callback", None)
    if type(callback).__name__ == "RichProgressBar":
        import importlib.util

        return "rich" if importlib.util.find_spec("rich") is not None else "tqdm"
    return "tqdm"
