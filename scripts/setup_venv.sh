# Sourced by demo.sh and test.sh: create .venv when missing and install cerebro with its test extra.
# torch==2.13.0 first: a CPU build (a bare `torch` would pull a multi-GB CUDA build).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import cerebro, pytest, jsonargparse" 2>/dev/null; then
  echo "setting up .venv (first run only)..."
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import cerebro, pytest" || { echo "installation failed" >&2; exit 1; }
fi
export MPLBACKEND=Agg
