#!/usr/bin/env bash
# One call on a CUDA machine (issue 13, item 5; issue 20): the CUDA tests, then the accuracy/speed benchmark on the GPU
# with fp32, bf16 and fp16 rows and peak memory. Never part of CI. Output: gpu_check.log (in $OUT/ when set).
#   bash scripts/gpu_check.sh            # about 5-8 minutes on one GPU
#   QUICK=1 bash scripts/gpu_check.sh    # smoke run
# On the lent device machine (../.library/device/README.md), whose python3 lacks captum, hydra-core, omegaconf and
# braindecode: first `bash scripts/gpu_wheels.sh` here, then one run that carries .whl:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Without .venv it uses python3 and installs .whl/ into /tmp/site. Each part has its own timeout, 560 s in all.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
LOG=${OUT:-.}/gpu_check.log
{
  if [ -d .whl ] && [ ! -x .venv/bin/python ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
  MODELS=(eegnex eegnex_random demo resnet18 vit)
  if ! "$PY" -c "import sys; sys.path.insert(0, 'tests/zoo/standins'); import captum.attr, hydra, omegaconf; from braindecode.models import EEGNeX"; then
    echo "!! braindecode (or captum/hydra) does not import: the EEGNeX rows are left out"
    MODELS=(demo resnet18 vit)
  fi
  echo "== CUDA tests"
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_ig_speed_accuracy.py tests/test_engine.py \
    tests/test_precision.py tests/test_precision_fp16.py
  echo "== benchmark --device cuda"
  if [ -n "${QUICK:-}" ]; then ARGS=(--quick); else ARGS=(--samples 32 --repeats 3); fi
  timeout 400 "$PY" scripts/bench_accuracy_speed.py --device cuda --models "${MODELS[@]}" "${ARGS[@]}"
} 2>&1 | tee "$LOG"
