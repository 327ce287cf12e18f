"""Test-only stand-in for ``torchaudio.transforms``: every name exists, and using it raises (see the package docstring)."""

from torchaudio import _missing


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(f"torchaudio.transforms.{name}")
