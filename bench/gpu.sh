#!/usr/bin/env bash
# One prepared GPU run (H100/H200, 16 CPUs, no internet) of bench/train_step.py, bench/decode.py and
# bench/fit_cost.py: everything we want recorded, in about 9 minutes, printed and written to bench/gpu-output.txt
# (and copied into $OUT when that is a folder).
#
#   bash bench/gpu.sh                      # from anywhere; runs from the repository root
#
# Uses .venv when there is one, else the python on PATH (with src/ on PYTHONPATH if vecset is not installed);
# installs nothing. Sample files: results/samples when it holds at least 8, else 16 demo cases generated in a
# few seconds with the package's own phantom/mesh/sample functions (snakemake --until split as a fallback).
# Each step runs under `timeout`, bounded also by what is left of the whole budget, and a failed or timed-out
# step is reported and the script goes on. Environment: BUDGET_S (560), WORKERS (14), BATCH (16), N_CASES (16).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_FILE=bench/gpu-output.txt
BUDGET_S=${BUDGET_S:-560}
WORKERS=${WORKERS:-14}
BATCH=${BATCH:-16}
N_CASES=${N_CASES:-16}
CPUS=$(nproc)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vecset-gpu-bench.XXXXXX")
export PYTHONUNBUFFERED=1

section() {
  printf '\n=== %s [%ds elapsed] ===\n' "$1" "$SECONDS"
}

# step LIMIT_S COMMAND...: run COMMAND under timeout (LIMIT_S, or less when the budget has less left); a
# failure is reported and never ends the script.
step() {
  local limit=$1 left rc=0
  shift
  left=$((BUDGET_S - SECONDS))
  if ((left < 30)); then
    echo "[skipped: ${left}s of the ${BUDGET_S}s budget left] $*"
    return 0
  fi
  if ((limit > left)); then
    limit=$left
  fi
  echo "\$ $*"
  timeout -k 20 "$limit" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "[timed out after ${limit}s]"
  elif ((rc != 0)); then
    echo "[exit status $rc]"
  fi
  return 0
}

bench() {
  local limit=$1
  shift
  step "$limit" python bench/train_step.py --device cuda --presets upstream --items production \
    --samples "$SAMPLES" --cpus "$CPUS" "$@"
}

# Demo sample files without Snakemake: the workflow's default settings and the functions its rules call.
write_generator() {
  cat >"$1" <<'PY'
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from vecset.config import validate_config
from vecset.data.phantom import write_phantom
from vecset.data.preprocess import mesh_case, sample_case
from vecset.settings import Config, build

OUT, N, PROCS = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
CFG = build(Config, validate_config({}))


def make(i):
    case, work = f"demo_{i:03d}", OUT / "work" / f"demo_{i:03d}"
    labels = work / "labels.nii.gz"
    write_phantom(labels, seed=[CFG.seed, i], labels=CFG.labels, size=CFG.demo.size)
    meshes = {s: work / f"{s}.ply" for s in CFG.labels}
    mesh_case(labels, case, dict(CFG.labels), meshes, work / "qc.json", CFG.ignore_unknown_labels, CFG.mesh.padding)
    sample_case(
        work / "qc.json", list(meshes.values()), case, OUT / f"{case}.npz", CFG.samples, CFG.normalisation.fit,
        CFG.seed, threads=1,
    )
    return case


started = time.perf_counter()
with ProcessPoolExecutor(PROCS, mp_context=multiprocessing.get_context("fork")) as pool:
    done = list(pool.map(make, range(N)))
print(f"{len(done)} demo cases sampled into {OUT} in {time.perf_counter() - started:.0f} s")
PY
}

count_npz() {
  find "$1" -maxdepth 1 -name '*.npz' 2>/dev/null | wc -l
}

main() {
  if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
  fi
  if ! python -c 'import vecset' 2>/dev/null; then
    export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "$( (nvidia-smi -L 2>/dev/null || echo 'nvidia-smi: none') | tr '\n' ' ')| $(python -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU visible: {torch.cuda.is_available()}")')"
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $CPUS CPUs; $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'); gcc: $(command -v gcc || echo none); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv 2>/dev/null || true
  if ! python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "no CUDA device visible to torch (a CPU-only torch build?); nothing to measure"
    return 1
  fi

  section "0. sample files"
  SAMPLES=results/samples
  if (($(count_npz "$SAMPLES") < 8)); then
    SAMPLES=$WORK/samples
    write_generator "$WORK/generate_samples.py"
    step 120 python "$WORK/generate_samples.py" "$SAMPLES" "$N_CASES" "$CPUS"
    if (($(count_npz "$SAMPLES") < 1)); then
      echo "the generator made none; trying snakemake --until split"
      step 150 snakemake --cores "$CPUS" --until split --config "demo={n_cases: $N_CASES}"
      SAMPLES=results/samples
    fi
  fi
  echo "$(count_npz "$SAMPLES") sample files in $SAMPLES"

  section "1. trainer throughput: upstream, batch $BATCH, production items; workers 0 vs $WORKERS, uniform vs fps input; seed baseline"
  bench 240 --batch-sizes "$BATCH" --routes ours,seed --workers "0,$WORKERS" --input-sampling uniform,fps \
    --steps 10 --warmup 3 --case-timeout 90 | tee "$WORK/throughput.txt"

  # The trained demo model's coarse-to-fine share and non-decoding work on the same case enter the estimate when
  # results/train/demo/{checkpoint-best.pt,settings.json} are here (carry them to the GPU machine).
  section "7. evaluation at production size: a real-size case at 0.5 mm, dense vs coarse-to-fine, bf16; untrained upstream model"
  step 170 python bench/decode.py --device cuda --production --cases 0 --real 1 --spacing-mm 0.5 \
    --threads "$CPUS" --batch "$BATCH" | tee "$WORK/decode.txt"

  section "8. latent fitting: 16 cases at once, upstream (untrained: the same work), bf16 latent context"
  step 90 python bench/fit_cost.py --cases 16 --device cuda --preset upstream --samples "$SAMPLES" \
    | tee "$WORK/fit.txt"

  section "5. MFU (from section 1: plan.flops_per_sample × samples/s / dense bf16 peak)"
  grep -E '^(preset|upstream +[0-9.]+ +[0-9]+ +ours)' "$WORK/throughput.txt" \
    | awk -F '   *' '{printf "%-8s %-6s %-8s %-8s %-10s %-10s %s\n", $3, $4, $5, $6, $10, $11, $15}' || true
  grep -o 'plan.flops_per_sample [0-9.]* TFLOP[^;]*' "$WORK/throughput.txt" | head -n 1 || true

  section "2. peak memory at batch 8/12/16; largest batch within 40 and 80 GB cards (38 / 78 GiB caps)"
  bench 150 --batch-sizes 8,12,16 --routes ours --workers "$WORKERS" --steps 2 --warmup 1 --no-drain \
    --max-batch --limits-gb 38,78 --case-timeout 60

  section "3. profiler split of one step (upstream, batch $BATCH, $WORKERS workers, uniform input)"
  bench 75 --batch-sizes "$BATCH" --routes ours --workers "$WORKERS" --steps 2 --warmup 2 --no-drain --profile

  section "4. checkpoint save of the upstream state (state/last.pt and best.pt, to ${TMPDIR:-/tmp})"
  df -hT "${TMPDIR:-/tmp}" | tail -n 1
  bench 75 --batch-sizes "$BATCH" --save

  section "6. activation checkpointing and torch.compile at batch $BATCH ($WORKERS workers, uniform input)"
  bench 60 --batch-sizes "$BATCH" --routes ours --workers "$WORKERS" --steps 10 --warmup 3 \
    --activation-checkpointing
  bench 200 --batch-sizes "$BATCH" --routes ours --workers "$WORKERS" --steps 10 --warmup 3 --compile

  section "done"
  echo "main figure (section 1): $(tail -n 1 "$WORK/throughput.txt" 2>/dev/null || echo none)"
  echo "evaluation (section 7): $(grep -E '^production model at' "$WORK/decode.txt" 2>/dev/null || echo none)"
  echo "latent fitting (section 8): $(grep -E '^upstream on cuda' "$WORK/fit.txt" 2>/dev/null || echo none)"
}

status=0
main "$@" 2>&1 | tee "$LOG_FILE" || status=$?
if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
  cp "$LOG_FILE" "$OUT/"
fi
rm -rf "$WORK"
exit "$status"
