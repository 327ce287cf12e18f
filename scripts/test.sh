#!/usr/bin/env bash
# Quick start, command 2: set up .venv if missing, then run the whole test suite. Extra arguments go to pytest.
#   --quick  only the quick tier (pytest -m quick, chosen in tests/conftest.py): the tests most likely to break,
#            in about 3 minutes on 2 cores, for the inner loop. The whole suite (no --quick) is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
for arg in "$@"; do
  if [ "$arg" = --quick ]; then args+=(-m quick); else args+=("$arg"); fi
done
if [ -n "${CEREBRO_TEST_ECHO:-}" ]; then  # print the pytest command instead of running it (tests/test_quick_tier.py)
  printf '%q ' pytest -q ${args[@]+"${args[@]}"}
  echo
  exit 0
fi
CEREBRO_SETUP=test
source scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q ${args[@]+"${args[@]}"}
