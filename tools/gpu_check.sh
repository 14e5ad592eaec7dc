#!/usr/bin/env bash
# Everything that needs a GPU, in one go (a lent GPU's time is short): `make gpu-check` on a machine with CUDA.
# First the paper-scale dry run of every notebook on CUDA with bf16 autocast (the papers' architectures, batch sizes and
# attacks on synthetic look-alikes, a few steps per model: what a paper run would hit first; then each architecture's
# measured step and peak memory at the paper's batch beside the plan's estimate), the plan's memory, the CUDA tests and
# both benchmarks. Each step has its own time limit, so one slow step does not lose the others; together they fit
# ten minutes on one H100. Writes gpu-check/<step>.txt and prints each step's exit code and time.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${GPU_CHECK_DIR:-gpu-check}
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...: run it for at most SECONDS, keep its output in $OUT/NAME.txt, say how it went
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "(stopped at its limit of $limit s)" >>"$OUT/$name.txt"
  echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s; output: $OUT/$name.txt)"
}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device here')" || exit 1
step device 15 $PY -c "import torch; print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
step paper-dry-run 270 env ADVNB_DEVICE=cuda ADVNB_PRECISION=bf16 ADVNB_CACHE_DIR="$OUT/cache" \
  ADVNB_REPORTS_DIR="$OUT/reports" $PY -m advnb run --scale paper --dry-run --check-plan
step plan 120 env ADVNB_PRECISION=bf16 $PY -m advnb plan --scale paper --device cuda --no-timing
step tests 60 $PY -m pytest -q -rs tests/test_fast_train.py tests/test_rlfat.py tests/test_core.py
step bench 45 $PY tools/bench_attacks.py --device cuda --threads 8
step bench-train 45 $PY tools/bench_train.py --device cuda --precision fp32,bf16,fp16 --n-per-class 512
tail -n 8 "$OUT"/bench*.txt
tail -n 3 "$OUT"/paper-dry-run.txt
cat "$OUT"/reports/paper-dry/plan-check.md 2>/dev/null
