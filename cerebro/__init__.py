"""cerebro: a model autopsy for PyTorch Lightning (Captum attributions and health diagnostics after training)."""

__version__ = "0.1.0"

from cerebro.diagnostics.base import Diagnostic  # noqa: E402
from cerebro.errors import AutopsyFailure, CerebroConfigError, CerebroError  # noqa: E402
from cerebro.registry import available_diagnostics, register_diagnostic  # noqa: E402
from cerebro.runner import run_autopsy  # noqa: E402
from cerebro.report.notebook import AutopsySummary, load_autopsy  # noqa: E402
from cerebro.model_autopsy import ModelAutopsy  # noqa: E402

__all__ = ["ModelAutopsy", "run_autopsy", "load_autopsy", "AutopsySummary", "Diagnostic", "register_diagnostic", "available_diagnostics",
           "CerebroConfigError", "CerebroError", "AutopsyFailure", "__version__"]
