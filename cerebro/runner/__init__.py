"""The autopsy engine: validate -> collect samples -> copy model -> preflight -> run each diagnostic -> write report.

Both the :class:`~cerebro.ModelAutopsy` callback and the ``cerebro-autopsy`` script call :func:`run_autopsy` /
:func:`execute`, so they produce the same outputs. One module per stage:

- :mod:`cerebro.runner.config`: :class:`AutopsyConfig` and :func:`build_config` (every option validated up front);
- :mod:`cerebro.runner.device`: :func:`resolve_device`;
- :mod:`cerebro.runner.prepare`: samples, the model copy, the target preflight and the shared forward pass;
- :mod:`cerebro.runner.diagnose`: each diagnostic in isolation, resume, time budgets, the run's status;
- :mod:`cerebro.runner.autopsy`: :func:`execute` and :func:`run_autopsy`, the orchestration and the writers.
"""

from __future__ import annotations

from cerebro.runner.config import AutopsyConfig, build_config, check_positive_int  # noqa: F401 - used by the callback
from cerebro.runner.device import resolve_device
from cerebro.runner.autopsy import execute, run_autopsy

__all__ = ["AutopsyConfig", "build_config", "run_autopsy", "execute", "resolve_device"]
