# Sourced by demo.sh and test.sh: create .venv when missing and install what the caller needs, saying what it does.
#   CEREBRO_SETUP=demo (demo.sh): cerebro itself (pip install -e .) and torch; no test tools.
#   CEREBRO_SETUP=test (test.sh): cerebro with its test extra (pip install -e ".[test]") and braindecode.
# Reinstalls when pyproject.toml or this script changed since the last install (a stamp in .venv holds their hash
# and the mode; a test install also serves the demo).
# torch==2.14.1 + torchvision==0.29.1 first: the standard build that imports torchvision, timm and transformers and
# also runs on a GPU (the CPU-only torch 2.13.0 wheel cannot import torchvision's wheels).
# braindecode goes in with --no-deps: it requires torchaudio, which has no release for these torch versions; its
# other dependencies are in the test extra, and tests/zoo/standins/torchaudio stands in for the import in tests.
_cerebro_mode="${CEREBRO_SETUP:-test}"
_cerebro_say() { echo "setup: $*" >&2; }
_cerebro_pip() { .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
_cerebro_hash="$(sha256sum pyproject.toml scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)"
_cerebro_stamp="$(cat .venv/.cerebro-installed 2>/dev/null || true)"
if [ "$_cerebro_mode" = test ]; then
  _cerebro_check="import cerebro, pytest, hypothesis, sklearn, torchvision, timm, transformers"
  _cerebro_fresh=$([ "$_cerebro_stamp" = "$_cerebro_hash test" ] && echo yes || echo no)
else
  _cerebro_check="import cerebro, torch, lightning, captum"
  _cerebro_fresh=$(case "$_cerebro_stamp" in "$_cerebro_hash "*) echo yes;; *) echo no;; esac)
fi
if [ ! -x .venv/bin/python ] || [ "$_cerebro_fresh" != yes ] || ! .venv/bin/python -c "$_cerebro_check" 2>/dev/null; then
  _cerebro_t0=$SECONDS
  if [ ! -x .venv/bin/python ]; then
    _cerebro_say "creating the virtualenv .venv (first run)"
    python3 -m venv .venv
  else
    _cerebro_say "updating .venv for the $_cerebro_mode (first $_cerebro_mode run, or pyproject.toml changed)"
  fi
  _cerebro_pip --upgrade pip
  # The distribution was called "cerebro" before (a name taken on the public index by another project).
  if .venv/bin/python -m pip show -q cerebro >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -y -q cerebro; fi
  if [ "$_cerebro_mode" = test ]; then
    if ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
      _cerebro_say "installing torch 2.14.1 + torchvision 0.29.1 (the standard build, with CUDA libraries: about 4.5 GB on disk, once)"
      _cerebro_pip "torch==2.14.1" "torchvision==0.29.1"
    fi
    _cerebro_say "installing cerebro with its test extra (pytest, transformers, timm, mne, loggers, ...)"
    _cerebro_pip -e ".[test]"
    _cerebro_say "installing braindecode 1.8.1 (--no-deps: its torchaudio has no release for this torch)"
    _cerebro_pip --no-deps "braindecode==1.8.1"
  else
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
      _cerebro_say "installing torch 2.14.1 (the standard build, with CUDA libraries: about 4.5 GB on disk, once)"
      _cerebro_pip "torch==2.14.1"
    fi
    _cerebro_say "installing cerebro and its dependencies (lightning, captum, hydra-core, matplotlib)"
    _cerebro_pip -e .
  fi
  .venv/bin/python -c "$_cerebro_check" || { echo "setup: installation failed" >&2; exit 1; }
  echo "$_cerebro_hash $_cerebro_mode" > .venv/.cerebro-installed
  _cerebro_say "done in $((SECONDS - _cerebro_t0)) s"
fi
export MPLBACKEND=Agg
