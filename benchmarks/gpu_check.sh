#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (torch, triton, transformers preinstalled; nothing can be
# downloaded there). Installs gotr1 without build isolation, runs the CUDA tests (compiled Triton, not the
# interpreter), then the benchmarks, and prints the compact tables last.
#
#   bash benchmarks/gpu_check.sh                       # every step
#   bash benchmarks/gpu_check.sh bench_generate bench_grpo_step   # only these steps (install always runs)
#
# Logs and tables go under $OUT (default /tmp/gotr1-gpu). The whole script stops starting steps, and cuts
# the running one short, at GPU_CHECK_SECONDS (default 540) so that it returns inside one 600 s device call
# with the tables it has; each step also has a limit of its own.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gotr1-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
ONLY=" $* "
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  if [ "$name" != install ] && [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then
    return
  fi
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: skipped, ${left}s left of GPU_CHECK_SECONDS"
    status=1
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
step install 240 $PY -m pip install -q --no-build-isolation --no-deps -e .

# CUDA tests: every test marked gpu, plus the kernel suites on CUDA tensors.
step tests 150 $PY -P -m pytest -q -m gpu -p no:cacheprovider tests

# Benchmarks, each with its own limit (seconds).
step bench_grpo_loss 120 $PY benchmarks/bench_grpo_loss.py --no-compile --markdown "$OUT/bench_grpo_loss.md"
step bench_sampling 100 $PY benchmarks/bench_sampling.py --markdown "$OUT/bench_sampling.md"
step bench_generate 240 $PY benchmarks/bench_generate.py --skip-cpu --markdown "$OUT/bench_generate.md"
step bench_grpo_step 150 $PY benchmarks/bench_grpo_step.py --steps 2 --markdown "$OUT/bench_grpo_step.md"
# The same step sharded with FSDP2 on one rank: the CUDA path of gotr1.policy.sharding (bf16 gathers, NCCL).
step bench_grpo_step_fsdp 150 $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
    benchmarks/bench_grpo_step.py --steps 1 --fsdp --markdown "$OUT/bench_grpo_step_fsdp.md"
# Kernel tuning at GoT-R1's shapes (writes $OUT/kernels.json; the default config is always a candidate), then the
# pytest-benchmark suite's CUDA cases with the tuned configs, saved for benchmarks/report.py.
step tune_kernels 150 $PY -m gotr1.kernels.tune --out "$OUT/kernels.json"
step bench_suite 150 env GOTR1_KERNEL_CONFIGS="$OUT/kernels.json" $PY -P -m pytest -q -p no:cacheprovider \
    benchmarks/ --benchmark-only --benchmark-json "$OUT/bench_suite.json"
[ -f "$OUT/bench_suite.json" ] && $PY benchmarks/report.py "$OUT/bench_suite.json" --markdown "$OUT/bench_suite.md"
# Evaluator metrics at real widths (random weights): batched vs one image at a time.
step bench_evaluators 90 $PY benchmarks/bench_evaluators.py --size base --images 32 --repeats 2 \
    --markdown "$OUT/bench_evaluators.md"

echo
echo "################ summary ($(head -n1 "$OUT/device.txt")) ################"
for table in "$OUT"/bench_*.md; do
  [ -f "$table" ] && { echo; cat "$table"; }
done
exit $status
