"""Test-only stand-in for ``torchaudio`` so that ``braindecode`` imports.

Why: braindecode imports torchaudio at module level (``braindecode.modules.filter``, a few models), but
torchaudio has no release for the torch versions cerebro is tested on (torch >= 2.12), so it cannot be installed
beside them. None of the braindecode models in the zoo matrix *calls* torchaudio in its forward pass; the few that
would (filter-bank front ends, resampling, spectrogram models) raise :class:`TorchaudioStandInError` the moment
they touch it, and the matrix records them as "not buildable here" with that reason.

This folder is put on ``sys.path`` by ``tests/zoo/conftest.py`` (and ``scripts/zoo_matrix.py``) only when a real
torchaudio is not importable. It is never installed and never shipped with cerebro.
"""

from __future__ import annotations

__version__ = "0.0.0+cerebro-test-standin"
STANDIN = True


class TorchaudioStandInError(RuntimeError):
    """Raised when code tries to *use* the torchaudio stand-in (only importing it is supported)."""


def _missing(qualname: str):
    def _raise(*args, **kwargs):
        raise TorchaudioStandInError(
            f"{qualname} was called, but torchaudio is only a test stand-in here (no torchaudio release exists "
            "for this torch version)"
        )

    class _Missing:
        def __init__(self, *args, **kwargs):
            _raise()

    _Missing.__name__ = _Missing.__qualname__ = qualname.rsplit(".", 1)[-1]
    return _Missing if qualname.rsplit(".", 1)[-1][:1].isupper() else _raise


from torchaudio import functional, transforms  # noqa: E402  (submodules, after the helpers they use)

__all__ = ["STANDIN", "TorchaudioStandInError", "functional", "transforms"]
