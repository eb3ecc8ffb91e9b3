#!/usr/bin/env bash
# Issue 30 on one GPU, run from the repo root on the GPU machine: engine dense against
# transformers' forward (timed and profiled; BEFORE=DIR also times an earlier tree of the
# repository, side by side on the same machine), then the crossover table of dense and star
# configurations: the 0.5B shape at 8K-128K, the 8B shape at 64K and 128K. OUT gets summary.txt
# and every report and profile in one archive (only a few files come back from the machine).
set -uo pipefail
OUT=${OUT:-gpu-out}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null
  date -u +%FT%TZ
} | tee "$OUT/summary.txt"
step() {  # seconds, tree, then the command
  local limit=$1 tree=$2; shift 2
  echo "## $tree: $*" | tee -a "$OUT/summary.txt"
  (cd "$tree" && PYTHONPATH=$PWD timeout "$limit" "$@") 2> >(grep -v '^\[bench\]' >> "$WORK/stderr.log") \
    | tee -a "$OUT/summary.txt"
}
if [ -n "${BEFORE:-}" ]; then
  step 120 "$BEFORE" python3 scripts/gpu_dense_profile.py --lengths 30k --repeats 3 \
    --out "$WORK/profile-before"
fi
step 150 . python3 scripts/gpu_dense_profile.py --lengths 30k,128k --repeats 3 \
  --candidates "${CANDIDATES:-passes_32k}" --out "$WORK/profile"
step 240 . python3 scripts/gpu_crossover.py --shape qwen2.5-0.5b --lengths ${LENGTHS:-8k,16k,32k,64k,96k,128k} \
  --configs "${CONFIGS_SMALL:-baselines,star 16K+relay,star 8K+relay,auto}" --repeats 3 --out "$WORK/crossover"
[ "${LARGE:-1}" = 1 ] && step 150 . python3 scripts/gpu_crossover.py --shape llama3-8b --lengths 64k,128k \
  --configs "${CONFIGS_LARGE:-exact,star 16K+relay}" --repeats 1 --out "$WORK/crossover"
cp "$WORK/stderr.log" "$OUT/" 2>/dev/null
tar -C "$WORK" -czf "$OUT/reports.tar.gz" .
