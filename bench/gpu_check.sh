#!/usr/bin/env bash
# One command for a GPU machine without network (torch, triton, pybind11, cmake, ninja
# preinstalled): build the extension, run the GPU tests (and every kernel
# test under compute-sanitizer), run the benchmarks, and write JSON + a markdown table of
# ratios under bench/results/.
#
#   bash bench/gpu_check.sh [--quick] [--budget SECONDS] [--out DIR]
#
# --quick finishes within 9 minutes (GPU tests of the kernels' cuda and triton backends, a
# reduced benchmark set, the training step, memcheck): one device call (timeout_s 580).
# --budget (default 540 s, quick 520 s) is never overrun: each step gets what is left. The
# device tool caps one command at 600 s: a full run of every test does not fit in one call.
# --out defaults to $OUT (what the device tool brings back) when set, else bench/results.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
budget=""
out=${OUT:-bench/results}
PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 || PY=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --budget) budget="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$budget" ] || budget=$([ $quick = 1 ] && echo 520 || echo 540)
start=$(date +%s)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
log="$out/gpu_check-$stamp.log"
status_file="$out/gpu_check-$stamp.status"
: > "$status_file"

left() { echo $(( budget - ($(date +%s) - start) )); }

step() {  # step NAME MIN_SECONDS MAX_SECONDS CMD...: run CMD within what is left of the budget (MAX 0: no cap)
  local name=$1 need=$2 cap=$3; shift 3
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$need" ]; then
    echo "== $name: SKIPPED (only ${remaining}s of the budget left)" | tee -a "$log"
    echo "$name skipped-budget" >> "$status_file"
    return 0
  fi
  local limit=$((remaining - 5))
  if [ "$cap" -gt 0 ] && [ "$cap" -lt "$limit" ]; then limit=$cap; fi
  echo "== $name (limit ${limit}s of ${remaining}s left): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc" >> "$status_file"
  echo "== $name: rc=$rc" | tee -a "$log"
}

export PYTHONUNBUFFERED=1
step build 120 0 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
step info 20 0 "$PY" -m mcc_fast info --json
"$PY" - "$out/environment-$stamp.json" <<'PY'
import json, subprocess, sys, datetime, platform
import torch
env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "python": platform.python_version(),
       "torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    import triton; env["triton"] = triton.__version__
except Exception as exc:
    env["triton"] = repr(exc)
try:
    env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    env["driver"] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
sys.exit(0 if env["device"] else 3)  # no GPU visible to torch: every GPU test would only be skipped
PY
echo "environment rc=$?" >> "$status_file"

kernel_tests=$(ls tests/test_vq*.py tests/test_warp*.py tests/test_grid_sample*.py tests/test_dense_motion_ops*.py \
  tests/test_group_norm_swish*.py tests/test_cuda_runtime.py 2>/dev/null | tr '\n' ' ')
# Quick mode caps each step so that the results (tests, benchmarks, the training step) come
# first and the sanitizers use what is left; a full run gives every step what remains.
q() { [ $quick = 1 ] && echo "$1" || echo 0; }
if [ $quick = 1 ]; then
  step gpu-tests 60 "$(q 150)" "$PY" -m pytest -q -m gpu $kernel_tests
  # the Triton kernels compiled for the GPU (on CPU they only ever ran in the interpreter)
  step triton-tests 40 "$(q 80)" "$PY" -m pytest -q -m "not gpu and not cuda_emulated and not slow" -k triton \
    $kernel_tests
else
  step tests 120 0 "$PY" -m pytest -q tests
fi
bench_json="$out/bench-$stamp.json"
if [ $quick = 1 ]; then
  step bench 60 "$(q 150)" "$PY" -m pytest -q bench -k "not 1048576 and not -large" --benchmark-min-rounds=5 \
    --benchmark-json "$bench_json"
else
  step bench 60 0 "$PY" -m pytest -q bench --benchmark-json "$bench_json"
fi
# the training step (issue target: bf16 on the fused kernels >= 1.5x fp32 on the reference, no more memory)
train_json="$out/train-bench-$stamp.jsonl"
train_steps=$([ $quick = 1 ] && echo 3 || echo 10)
step train-bench 60 "$(q 100)" bash -c "set -o pipefail; $PY -m mcc_fast.training.benchmark --config official --batch 4 \
  --steps $train_steps --warmup 2 --runs fp32:reference bf16:reference bf16:fused | tee '$train_json'"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$sanitizer" ] && [ -n "$kernel_tests" ]; then
  step memcheck 60 0 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool memcheck --error-exitcode 1 \
    "$PY" -m pytest -q -m gpu -x $kernel_tests
  [ $quick = 1 ] || step racecheck 90 0 "$sanitizer" --tool racecheck --error-exitcode 1 \
    "$PY" -m pytest -q -m gpu -x $kernel_tests
else
  echo "memcheck skipped-no-sanitizer" >> "$status_file"
fi
if [ -s "$bench_json" ] || [ -s "$train_json" ]; then
  { [ -s "$bench_json" ] && "$PY" bench/summarize.py "$bench_json" --environment "$out/environment-$stamp.json"
    [ -s "$train_json" ] && printf '\nTraining step (%s):\n\n```\n%s\n```\n' "$train_json" "$(cat "$train_json")"
  } > "$out/RESULTS.md"
  cat "$out/RESULTS.md"
fi
echo "gpu_check.sh: done in $(( $(date +%s) - start ))s; results in $out" | tee -a "$log"
! grep -v -e "rc=0" -e "skipped-" "$status_file"
