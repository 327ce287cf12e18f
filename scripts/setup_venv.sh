# Sourced by demo.sh and test.sh: create .venv when missing and install cerebro with its test extra; reinstall the
# extras when pyproject.toml changed since the last install (a stamp in .venv holds its hash).
# torch==2.14.1 + torchvision==0.29.1 first: the standard build that imports torchvision, timm and transformers and
# also runs on a GPU (the CPU-only torch 2.13.0 wheel cannot import torchvision's wheels).
# braindecode goes in with --no-deps: it requires torchaudio, which has no release for these torch versions; its
# other dependencies are in the test extra, and tests/zoo/standins/torchaudio stands in for the import in tests.
_cerebro_pip() { .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
_cerebro_stamp="$(sha256sum pyproject.toml scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import cerebro, pytest" 2>/dev/null \
   || [ "$(cat .venv/.cerebro-installed 2>/dev/null)" != "$_cerebro_stamp" ]; then
  echo "setting up .venv (first run, or pyproject.toml changed)..."
  [ -x .venv/bin/python ] || python3 -m venv .venv
  _cerebro_pip --upgrade pip
  .venv/bin/python -c "import torchvision" 2>/dev/null || _cerebro_pip "torch==2.14.1" "torchvision==0.29.1"
  _cerebro_pip -e ".[test]"
  _cerebro_pip --no-deps "braindecode==1.8.1"
  .venv/bin/python -c "import cerebro, pytest, hypothesis, sklearn, torchvision, timm, transformers" \
    || { echo "installation failed" >&2; exit 1; }
  echo "$_cerebro_stamp" > .venv/.cerebro-installed
fi
export MPLBACKEND=Agg
