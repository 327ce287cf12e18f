#!/usr/bin/env bash
# One call on a CUDA machine (issue 13, item 5): the CUDA tests, then the accuracy/speed benchmark on the GPU with
# fp32, bf16 and fp16 rows and peak memory. Never part of CI. Output: gpu_check.log (and $OUT/ when set).
#   bash scripts/gpu_check.sh            # about 5-8 minutes on one GPU
#   QUICK=1 bash scripts/gpu_check.sh    # smoke run
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOG=${OUT:-.}/gpu_check.log
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
  echo "== CUDA tests"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_ig_speed_accuracy.py tests/test_engine.py \
    tests/test_precision.py
  echo "== benchmark --device cuda"
  if [ -n "${QUICK:-}" ]; then ARGS=(--quick); else ARGS=(--samples 32 --repeats 3); fi
  timeout 420 "$PY" scripts/bench_accuracy_speed.py --device cuda "${ARGS[@]}"
} 2>&1 | tee "$LOG"
