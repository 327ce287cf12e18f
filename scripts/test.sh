#!/usr/bin/env bash
# Quick start, command 2: set up .venv if missing, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
CEREBRO_SETUP=test
source scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
