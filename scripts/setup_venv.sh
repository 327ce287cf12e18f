# Sourced by demo.sh and test.sh: create .venv when missing and install cerebro with its test extra; reinstall the
# extras when pyproject.toml changed since the last install (a stamp in .venv holds its hash).
# torch==2.13.0 first: a CPU build (a bare `torch` would pull a multi-GB CUDA build).
_cerebro_pip() { .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
_cerebro_stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import cerebro, pytest" 2>/dev/null \
   || [ "$(cat .venv/.cerebro-installed 2>/dev/null)" != "$_cerebro_stamp" ]; then
  echo "setting up .venv (first run, or pyproject.toml changed)..."
  [ -x .venv/bin/python ] || python3 -m venv .venv
  _cerebro_pip --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || _cerebro_pip "torch==2.13.0"
  _cerebro_pip -e ".[test]"
  .venv/bin/python -c "import cerebro, pytest, hypothesis, sklearn" || { echo "installation failed" >&2; exit 1; }
  echo "$_cerebro_stamp" > .venv/.cerebro-installed
fi
export MPLBACKEND=Agg
