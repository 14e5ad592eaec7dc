#!/usr/bin/env bash
# Everything that needs a GPU, in one go (a lent GPU's time is short): `make gpu-check` on a machine with CUDA.
# Writes gpu-check/<step>.txt (device, CUDA tests, every notebook at smoke scale on CUDA, the PGD benchmark, the
# training benchmark with and without AMP) and prints each step's time. About ten minutes on one modern GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${GPU_CHECK_DIR:-gpu-check}
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run it, keep its output in $OUT/NAME.txt, say how long it took
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s (output: $OUT/$name.txt)"
}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device here')" || exit 1
step device $PY -c "import torch; print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
step tests $PY -m pytest -q -rs tests/test_fast_train.py tests/test_rlfat.py tests/test_core.py
step smoke env ADVNB_DEVICE=cuda ADVNB_CACHE_DIR="$OUT/cache" ADVNB_REPORTS_DIR="$OUT/reports" \
  $PY -m advnb run --scale smoke
step bench $PY tools/bench_attacks.py --device cuda --threads 8
step bench-train $PY tools/bench_train.py --device cuda --precision fp32,bf16,fp16 --n-per-class 512
tail -n 8 "$OUT"/bench*.txt
