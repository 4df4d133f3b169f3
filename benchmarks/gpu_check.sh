#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (torch, triton, transformers preinstalled; nothing can be
# downloaded there). A device call lasts at most 600 s, so the steps come in named plans, each of which fits
# GPU_CHECK_SECONDS (540) by construction: the sum of its steps' limits, plus GRACE seconds each for `timeout -k`
# to kill a step that ignores SIGTERM, plus RESERVE for the device line and the summary. A plan that would not fit
# is refused before anything runs. Plans order their steps by what has never been measured on a GPU.
#
#   bash benchmarks/gpu_check.sh                    # the default plan, "first"
#   bash benchmarks/gpu_check.sh --plan second      # another plan;  --list: every plan and its budget
#   bash benchmarks/gpu_check.sh bench_sampling     # only these steps (preflight and install always run first)
#   bash benchmarks/gpu_check.sh --dry-run [...]    # print the plan and exit
#   bash benchmarks/gpu_check.sh --fetch-wheels .whl   # where a registry is reachable: wheels the preflight can
#                                                      # install from (carry the folder to the GPU machine)
#
# Each step prints its table as soon as it has it; logs and tables go under $OUT (default /tmp/gotr1-gpu). The
# install needs no build tools: without cmake / a compiler / scikit-build-core / pybind11 (or when the editable
# install fails) the source tree is laid out under $OUT/src and put on PYTHONPATH (the canvas, which only the
# layout reward needs, is then built by the compiler alone if pybind11's headers are there, else left out).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/gotr1-gpu}
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
BUDGET=${GPU_CHECK_SECONDS:-540}
GRACE=5     # seconds from SIGTERM to SIGKILL of a step over its limit
RESERVE=15  # the device line and the summary

# Steps, in the order of what has never been measured on a GPU, and each one's limit in seconds.
STEPS=(preflight install tests bench_generate bench_grpo_step bench_grpo_step_fsdp bench_sampling tune_kernels
       bench_suite bench_evaluators bench_grpo_loss)
declare -A LIMIT=(
  [preflight]=30 [install]=60
  [tests]=150             # the CUDA tests and the kernel suites compiled (`-m "gpu or kernels"`)
  [bench_generate]=120    # generation at Janus-Pro-1B geometry: CUDA graphs vs eager vs transformers vs GoT-R1's loop
  [bench_grpo_step]=120   # one GRPO step of the 1b preset at G = 16 (LoRA)
  [bench_grpo_step_fsdp]=130  # the same step sharded with FSDP2 on one rank (bf16 gathers, NCCL)
  [bench_sampling]=90
  [tune_kernels]=170      # writes $OUT/kernels.json after every case; stops itself 15 s before its limit
  [bench_suite]=200 [bench_evaluators]=90
  [bench_grpo_loss]=100   # measured on an H200 already (benchmarks/RESULTS.md)
)
declare -A PLANS=(
  [first]="preflight install tests bench_generate bench_grpo_step"
  [second]="preflight install bench_grpo_step_fsdp bench_sampling tune_kernels"
  [measured]="preflight install bench_suite bench_evaluators bench_grpo_loss"
)
# Test files holding `gpu` or `kernels` tests (tests/test_gpu_check.py keeps this list complete). Named, not
# collected from tests/: a module that fails to import (a missing optional package) would stop the whole run.
TEST_FILES=(tests/test_generate.py tests/test_rewards_judges.py tests/test_grpo_loss.py tests/test_advantages.py
            tests/test_sampling.py)

plan_seconds() {  # plan_seconds STEP...: what the steps take at most
  local total=$RESERVE step
  for step in "$@"; do total=$((total + LIMIT[$step] + GRACE)); done
  echo "$total"
}

print_plan() {  # print_plan NAME STEP...
  local name=$1; shift
  echo "plan $name ($(plan_seconds "$@") s of $BUDGET: limits + ${GRACE} s kill grace each + ${RESERVE} s):"
  local step
  for step in "$@"; do echo "  $step ${LIMIT[$step]} s"; done
}

fetch_wheels() {  # pure-Python wheels (and psutil's abi3 one) of what the preflight may miss, for .whl/
  mkdir -p "$1" && $PY -m pip download -q --no-deps -d "$1" peft accelerate pytest-benchmark py-cpuinfo hypothesis \
    sortedcontainers psutil
}

plan=first dry=0 named=()
while [ $# -gt 0 ]; do
  case $1 in
    --plan) plan=${2:?--plan needs a name}; shift ;;
    --list) for p in first second measured; do print_plan "$p" ${PLANS[$p]}; done; exit 0 ;;
    --dry-run) dry=1 ;;
    --fetch-wheels) fetch_wheels "${2:?--fetch-wheels needs a folder}"; exit $? ;;
    -*) echo "gpu_check: unknown option $1"; exit 2 ;;
    *) named+=("$1") ;;
  esac
  shift
done
if [ ${#named[@]} -gt 0 ]; then
  plan="named"
  for step in "${named[@]}"; do
    [ -n "${LIMIT[$step]:-}" ] || { echo "gpu_check: unknown step $step (steps: ${STEPS[*]})"; exit 2; }
  done
  selected=(preflight install)
  for step in "${STEPS[@]}"; do [[ " ${named[*]} " == *" $step "* ]] && [[ " ${selected[*]} " != *" $step "* ]] && selected+=("$step"); done
else
  [ -n "${PLANS[$plan]:-}" ] || { echo "gpu_check: unknown plan $plan (plans: ${!PLANS[*]})"; exit 2; }
  read -r -a selected <<< "${PLANS[$plan]}"
fi
print_plan "$plan" "${selected[@]}"
if [ "$(plan_seconds "${selected[@]}")" -gt "$BUDGET" ]; then
  echo "gpu_check: plan $plan needs $(plan_seconds "${selected[@]}") s, more than GPU_CHECK_SECONDS=$BUDGET; split it"
  exit 2
fi
[ "$dry" -eq 1 ] && exit 0

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
PYP="$PY"  # -P: the repository root must not shadow the installed package (Python >= 3.11)
$PY -P -c "" 2>/dev/null && PYP="$PY -P"
status=0
declare -A RESULT

step() {  # step NAME COMMAND...: run with the step's limit, log to $OUT/NAME.log, print its table at once
  local name=$1; shift
  local limit=${LIMIT[$name]} t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout -k "$GRACE" "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  RESULT[$name]="exit $rc after $((SECONDS - t0))s"
  echo "=== $name: ${RESULT[$name]}"
  [ "$rc" -eq 0 ] || status=1
  if [ -f "$OUT/$name.md" ]; then cat "$OUT/$name.md"; fi
}

skip() {  # skip NAME REASON
  RESULT[$1]="skipped: $2"
  echo "=== $1: skipped: $2"
  status=1
}

source_tree() {  # the package laid out under $OUT/src as an install would (kernels/ -> gotr1/kernels)
  local src=$OUT/src/gotr1 entry
  rm -rf "$OUT/src" && mkdir -p "$src"
  for entry in "$REPO"/gotr1/*; do ln -s "$entry" "$src/"; done
  ln -s "$REPO/kernels" "$src/kernels"
  local includes suffix
  if includes=$($PY -m pybind11 --includes 2>/dev/null) && command -v c++ >/dev/null; then
    suffix=$($PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    c++ -O3 -shared -fPIC -std=c++17 $includes -I"$REPO/csrc" "$REPO/csrc/canvas.cpp" "$REPO/csrc/bindings.cpp" \
      -o "$src/_canvas$suffix" -lpthread && echo "install: canvas built with c++ alone"
  fi
  export PYTHONPATH=$OUT/src${PYTHONPATH:+:$PYTHONPATH}
  echo "install: source tree on PYTHONPATH ($OUT/src)"
}

run_step() {
  local name=$1
  case $name in
    preflight)
      command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        | tee "$OUT/device.txt"
      step preflight $PY benchmarks/gpu_preflight.py "$OUT" --wheels "$WHEELS"
      [ -f "$OUT/preflight.env" ] && source "$OUT/preflight.env" ;;
    install)
      if [ "${EDITABLE_OK:-1}" -eq 1 ]; then
        step install $PY -m pip install -q --no-build-isolation --no-deps -e .
      else
        RESULT[install]="no build tools (see preflight): the source tree instead"
      fi
      if [[ "${RESULT[install]}" != "exit 0"* ]]; then source_tree; fi
      $PYP -c "import gotr1.kernels, gotr1.grpo.trainer; print('install: gotr1 imports from', gotr1.__path__[0])" ;;
    tests)
      local opts=()
      # Without pytest-benchmark the repository's addopts (--benchmark-disable) would stop pytest at once.
      [ "${HAS_BENCHMARK:-1}" -eq 1 ] || opts=(-o "addopts=-ra --strict-markers --import-mode=importlib")
      step tests $PYP -m pytest -v -p no:cacheprovider ${opts[@]+"${opts[@]}"} -m "gpu or kernels" "${TEST_FILES[@]}" ;;
    bench_generate)
      step bench_generate $PY benchmarks/bench_generate.py --skip-cpu --markdown "$OUT/bench_generate.md" ;;
    bench_grpo_step)
      if [ "${HAS_PEFT:-1}" -eq 0 ]; then skip bench_grpo_step "peft is missing (LoRA)"; return; fi
      step bench_grpo_step $PY benchmarks/bench_grpo_step.py --steps 1 --markdown "$OUT/bench_grpo_step.md" ;;
    bench_grpo_step_fsdp)
      if [ "${HAS_PEFT:-1}" -eq 0 ]; then skip bench_grpo_step_fsdp "peft is missing (LoRA)"; return; fi
      step bench_grpo_step_fsdp $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
        benchmarks/bench_grpo_step.py --steps 1 --fsdp --markdown "$OUT/bench_grpo_step_fsdp.md" ;;
    bench_sampling)
      step bench_sampling $PY benchmarks/bench_sampling.py --markdown "$OUT/bench_sampling.md" ;;
    tune_kernels)
      step tune_kernels $PYP -m gotr1.kernels.tune --out "$OUT/kernels.json" \
        --budget-seconds $((LIMIT[tune_kernels] - 15)) ;;
    bench_suite)
      if [ "${HAS_BENCHMARK:-1}" -eq 0 ]; then skip bench_suite "pytest-benchmark is missing"; return; fi
      step bench_suite env GOTR1_KERNEL_CONFIGS="$OUT/kernels.json" $PYP -m pytest -q -p no:cacheprovider \
        benchmarks/ --benchmark-only --benchmark-json "$OUT/bench_suite.json"
      if [ -f "$OUT/bench_suite.json" ]; then
        $PY benchmarks/report.py "$OUT/bench_suite.json" --markdown "$OUT/bench_suite.md" && cat "$OUT/bench_suite.md"
      fi ;;
    bench_evaluators)
      step bench_evaluators $PY benchmarks/bench_evaluators.py --size base --images 32 --repeats 2 \
        --markdown "$OUT/bench_evaluators.md" ;;
    bench_grpo_loss)
      step bench_grpo_loss $PY benchmarks/bench_grpo_loss.py --no-compile --markdown "$OUT/bench_grpo_loss.md" ;;
  esac
}

for name in "${selected[@]}"; do run_step "$name"; done

echo
echo "################ summary: plan $plan ($(head -n1 "$OUT/device.txt" 2>/dev/null || echo 'no nvidia-smi')) ################"
for name in "${selected[@]}"; do echo "$name: ${RESULT[$name]:-not run}"; done
exit $status
