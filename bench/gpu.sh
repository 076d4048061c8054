#!/usr/bin/env bash
# The GPU record in one go, on a bare GPU machine: python3 with torch + CUDA, no package index, no snakemake.
#
#   bash bench/gpu-wheels.sh .whl          # once, where pip reaches PyPI: the wheels bench/gpu-wheels.txt names
#   bash bench/gpu.sh --wheels .whl        # on the GPU machine (bring .whl along), from anywhere
#   bash bench/gpu.sh --smoke              # every section on the CPU at tiny sizes (tests/test_benches.py)
#
# Imports that fail are installed from the wheel folder only (--no-index, into a temporary target; it says which).
# Sections run in order of value, each under its own time limit and all within BUDGET_S (480 s, sample generation
# included); a failed or timed-out section is reported and the next one runs. Every line goes at once to
# bench/gpu-output.txt (bench/gpu-smoke-output.txt with --smoke) and, when OUT is a folder, to $OUT/gpu-output.txt,
# so a machine that stops answering midway still returns what ran. Each section prints its figure as soon as it has it; the last lines sum them up.
# DataLoader workers and generator processes: at most the CPUs minus two.
#
#   0. GPU correctness tests (tests/gpu, <= 90 s), while demo sample files are generated (bench/make_samples.py)
#   1. trainer throughput at the production run's settings (config/imagecas.yaml: upstream, batch 16) against the
#      seed's configuration in the same run: samples/s per GPU, data wait, MFU, and the profiler's split of one
#      more step (bench/train_step.py)
#   2. peak memory at batch 8 and 16, the largest batch within 40 and 80 GB cards
#   3. one checkpoint save of the upstream state (state/last.pt, 7 GB)
#   4. evaluation of a real-size case at 0.5 mm, per case (bench/decode.py)
#   5. latent fitting per case (bench/fit_cost.py)
#   6. train.compile at batch 16
#   7. with what time is left: uniform and fps input with all spare CPUs as DataLoader workers
#
# Environment: OUT, BUDGET_S, PYTHON (python3), N_CASES (16 sample files; results/samples is used when it has 8),
# TRAINED_RUN (results/train/demo: a trained run folder whose model section 4 also scores, when it is there).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
SMOKE=0
WHEELS=.whl
while (($#)); do
  case $1 in
    --smoke) SMOKE=1 ;;
    --wheels)
      WHEELS=${2:?--wheels needs a folder}
      shift
      ;;
    *)
      echo "usage: bash bench/gpu.sh [--smoke] [--wheels DIR]" >&2
      exit 2
      ;;
  esac
  shift
done

PY=${PYTHON:-python3}
TRAINED_RUN=${TRAINED_RUN:-results/train/demo}
CPUS=$(nproc)
SPARE=$((CPUS > 3 ? CPUS - 2 : 1))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vecset-gpu-bench.XXXXXX")
FAILED=()
export PYTHONUNBUFFERED=1
if ((SMOKE)); then
  BUDGET_S=${BUDGET_S:-300}
  # The production run's items with the tiny preset, 2 CPUs per rank; torch.compile traces without generating code.
  DEVICE=cpu PRESET=tiny BATCH=2 RANK=(--cpus 2) STEPS=2 WARMUP=1 MEMORY_BATCHES=2,4 LIMITS=1,2 BACKEND=aot_eager
  SPACING=4 REAL_SIZE=demo FIT=(--cases 2 --fit-steps 20) N_CASES=2 GENERATE=(--smoke) LOADER_INPUTS=fps
  export VECSET_GPU_TESTS_ON_CPU=1
else
  BUDGET_S=${BUDGET_S:-480}
  DEVICE=cuda PRESET=upstream BATCH=16 RANK=() STEPS=10 WARMUP=3 MEMORY_BATCHES=8,16 LIMITS=38,78 BACKEND=inductor
  SPACING=0.5 REAL_SIZE=real FIT=(--cases 16) N_CASES=${N_CASES:-16} GENERATE=(--cases "$N_CASES")
  LOADER_INPUTS=uniform,fps
fi

section() {
  printf '\n=== %s [%ds of %ds] ===\n' "$1" "$SECONDS" "$BUDGET_S"
}

# step NAME LIMIT_S COMMAND...: COMMAND under timeout (LIMIT_S, or less when the budget has less left), its output
# also in $WORK/NAME.txt; a failure or a timeout is reported, remembered, and never ends the script.
step() {
  local name=$1 limit=$2 left rc=0
  shift 2
  left=$((BUDGET_S - SECONDS))
  if ((left < 20)); then
    echo "[skipped: ${left}s of the ${BUDGET_S}s budget left] $*"
    FAILED+=("$name (no time left)")
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "\$ $*"
  timeout -k 15 "$limit" "$@" 2>&1 | tee "$WORK/$name.txt"
  rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    echo "[timed out after ${limit}s]"
    FAILED+=("$name (timed out after ${limit}s)")
  elif ((rc != 0)); then
    echo "[exit status $rc]"
    FAILED+=("$name (exit status $rc)")
  fi
  return 0
}

count_npz() {
  find "$1" -maxdepth 1 -name '*.npz' 2>/dev/null | wc -l
}

environment() {
  echo "bash bench/gpu.sh$( ((SMOKE)) && echo ' --smoke'); $(date -u '+%Y-%m-%d %H:%M UTC'); $CPUS CPUs" \
    "($SPARE for workers and generators); $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB RAM"}');" \
    "git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv 2>/dev/null ||
    echo "nvidia-smi: none"
  "$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, GPU visible: {torch.cuda.is_available()}")'
}

main() {
  environment || return 1
  if ! "$PY" -c 'import vecset' 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" bench/gpu_deps.py --wheels "$WHEELS" --target "$WORK/site" || return 1
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  if ((!SMOKE)) && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "no CUDA device visible to torch; nothing to measure (bash bench/gpu.sh --smoke runs the sections on the CPU)"
    return 1
  fi

  SAMPLES=results/samples
  local generator=""
  if ((SMOKE)) || (($(count_npz "$SAMPLES") < 8)); then
    SAMPLES=$WORK/samples
    timeout -k 10 150 "$PY" bench/make_samples.py "$SAMPLES" "${GENERATE[@]}" >"$WORK/samples.log" 2>&1 &
    generator=$!
  fi

  section "0. GPU correctness tests (tests/gpu; demo sample files generated meanwhile)"
  step tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/gpu
  if [[ -n $generator ]]; then
    wait "$generator" || FAILED+=("sample generation (exit status $?)")
    cat "$WORK/samples.log"
  fi
  echo "$(count_npz "$SAMPLES") sample files in $SAMPLES"
  local trainer=("$PY" bench/train_step.py --device "$DEVICE" --presets "$PRESET" --items production "${RANK[@]}"
    --samples "$SAMPLES")

  section "1. trainer throughput: $PRESET, batch $BATCH, the production run's settings; the seed's configuration beside it"
  step throughput 150 "${trainer[@]}" --batch-sizes "$BATCH" --routes ours,seed --steps "$STEPS" --warmup "$WARMUP" \
    --profile --case-timeout 120

  section "2. peak memory at batches $MEMORY_BATCHES; the largest batch within 40 and 80 GB cards ($LIMITS GiB caps)"
  step memory 130 "${trainer[@]}" --batch-sizes "$MEMORY_BATCHES" --routes ours --steps 2 --warmup 1 --no-drain \
    --max-batch --limits-gb "$LIMITS" --case-timeout 60

  section "3. one checkpoint save of the $PRESET state (state/last.pt and best.pt, to ${TMPDIR:-/tmp})"
  df -h "${TMPDIR:-/tmp}" | tail -n 1
  step save 90 "${trainer[@]}" --batch-sizes "$BATCH" --save

  section "4. evaluation per case: a $REAL_SIZE-size phantom at $SPACING mm, dense and coarse-to-fine (untrained $PRESET)"
  local run=()  # a trained model scores the case too when its run is here (it prices the CPU-side work)
  [[ -f $TRAINED_RUN/checkpoint-best.pt && -f $TRAINED_RUN/settings.json ]] && run=(--run "$TRAINED_RUN")
  step decode 120 "$PY" bench/decode.py --device "$DEVICE" --production --preset "$PRESET" --cases 0 --real 1 \
    --real-size "$REAL_SIZE" --spacing-mm "$SPACING" --threads "$SPARE" --batch "$BATCH" "${run[@]}"

  section "5. latent fitting per case: ${FIT[*]} at once, $PRESET (untrained: the same work)"
  step fit 90 "$PY" bench/fit_cost.py "${FIT[@]}" --device "$DEVICE" --preset "$PRESET" --samples "$SAMPLES"

  section "6. train.compile at batch $BATCH"
  step compile 200 "${trainer[@]}" --batch-sizes "$BATCH" --routes ours --steps "$STEPS" --warmup "$WARMUP" --compile \
    --compile-backend "$BACKEND" --case-timeout 190

  section "7. with the time left: $LOADER_INPUTS input with $SPARE DataLoader workers"
  step loader 90 "${trainer[@]}" --batch-sizes "$BATCH" --routes ours --steps "$STEPS" --warmup "$WARMUP" \
    --workers "$SPARE" --input-sampling "$LOADER_INPUTS" --case-timeout 45

  section "summary"
  echo "throughput (1): $(tail -n 1 "$WORK/throughput.txt" 2>/dev/null)"
  echo "memory (2): $(grep -h 'within .* GiB' "$WORK/memory.txt" 2>/dev/null | tr -s ' ' | paste -sd ';')"
  echo "checkpoint (3): $(grep -h '^checkpoint save' "$WORK/save.txt" 2>/dev/null)"
  echo "evaluation (4): $(grep -h '^production model at' "$WORK/decode.txt" 2>/dev/null)"
  echo "latent fitting (5): $(grep -h " on $DEVICE (" "$WORK/fit.txt" 2>/dev/null)"
  echo "compile (6): $(tail -n 1 "$WORK/compile.txt" 2>/dev/null)"
  if ((${#FAILED[@]})); then
    echo "gpu.sh: ${#FAILED[@]} section(s) failed: $(printf '%s; ' "${FAILED[@]}")"
    return 1
  fi
  echo "gpu.sh: every section ran in ${SECONDS}s"
}

LOGS=(bench/gpu-output.txt)
((SMOKE)) && LOGS=(bench/gpu-smoke-output.txt)  # a smoke run never overwrites a GPU run's log
if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
  LOGS+=("$OUT/gpu-output.txt")
fi
main 2>&1 | tee "${LOGS[@]}"
status=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$status"
