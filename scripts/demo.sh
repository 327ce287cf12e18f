#!/usr/bin/env bash
# Quick start, command 1: set up .venv if missing, train the demo model on synthetic EEG, write the autopsy report.
# Extra arguments are Hydra overrides, e.g.  bash scripts/demo.sh trainer.max_epochs=5
set -euo pipefail
cd "$(dirname "$0")/.."
CEREBRO_SETUP=demo
source scripts/setup_venv.sh
exec .venv/bin/python -m cerebro.demo.run "$@"
