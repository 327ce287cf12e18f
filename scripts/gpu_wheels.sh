#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on the lent GPU machine (see ../.library/device/README.md), fetched here into .whl/
# (ignored by git): the device's python3 (3.12) has torch, lightning, torchvision and timm, but not captum, hydra-core,
# omegaconf or braindecode. The pins are this venv's versions; the list is what `import captum.attr, hydra, omegaconf;
# from braindecode.models import EEGNeX` loads beyond the device image's own packages (its list, 2026-11-17). About
# 21 MB. Then, in one device call that carries .whl:   bash scripts/gpu_check.sh   (it installs them first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
mkdir -p .whl
PINS=(annotated-types==0.8.0 asttokens==3.0.2 axial-positional-embedding==0.3.12 braindecode==1.8.1 captum==0.9.0
      cffi==2.1.1 colt5-attention==0.11.2 decorator==5.3.2 docstring-inheritance==3.0.0 executing==2.3.0
      hydra-core==1.3.8 hyper-connections==0.4.11 ipython==9.19.1 ipython-pygments-lexers==1.1.1 jedi==0.20.1
      linear-attention-transformer==0.19.1 linformer==0.2.3 local-attention==1.11.2 matplotlib-inline==0.2.2
      mne==1.13.2 mne-bids==0.20.0 omegaconf==2.3.1 parso==0.8.7 pexpect==4.9.0 platformdirs==4.14.9 pooch==1.9.0
      product-key-memory==0.3.0 prompt-toolkit==3.0.53 ptyprocess==0.7.0 pure-eval==0.2.4 pycparser==3.12
      pydantic==2.14.4 pydantic-core==2.50.5 skorch==1.4.0 sniffio==1.3.1 soundfile==0.14.0 stack-data==0.6.3
      torch-einops-utils==0.2.0 torchinfo==1.8.0 traitlets==5.16.1 truststore==0.10.5 typing-inspection==0.4.5
      wcwidth==0.9.5 wfdb==4.3.1)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PINS[@]}"
# antlr4 4.9.3 (hydra-core 1.3's pin) is an sdist only: built here (pure Python)
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl | wc -l
du -sh .whl
