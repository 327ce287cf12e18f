"""Where the bundled YAML configs live: ``cerebro/_configs`` in a wheel, ``<repo>/configs`` in a checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_dir"]


def config_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_configs", here.parent / "configs"):
        if (candidate / "autopsy").is_dir():
            return candidate
    raise FileNotFoundError(f"cerebro's configs are missing: looked in {here / '_configs'} and {here.parent / 'configs'}")
