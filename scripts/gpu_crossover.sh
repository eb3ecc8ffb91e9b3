#!/usr/bin/env bash
# Issue 30 on one GPU: engine dense against transformers' forward (timed, then profiled) and the
# crossover table of dense and star configurations, 0.5B shape at 8K-128K and 8B shape at 64K and
# 128K. Run from the repo root on the GPU machine. OUT gets the summary (summary.txt) and every
# report and profile in one archive (at most a few files come back from the machine).
set -uo pipefail
OUT=${OUT:-gpu-out}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null
  date -u +%FT%TZ
} | tee "$OUT/summary.txt"
step() {  # seconds, then the command
  local limit=$1; shift
  timeout "$limit" "$@" 2> >(grep -v '^\[bench\]' >> "$WORK/stderr.log") | tee -a "$OUT/summary.txt"
}
[ "${DENSE:-1}" = 1 ] && step 200 python3 scripts/gpu_dense_profile.py --shape qwen2.5-0.5b --lengths 30k,128k \
  --repeats 3 ${CANDIDATES:---candidates} --out "$WORK/profile"
step 240 python3 scripts/gpu_crossover.py --shape qwen2.5-0.5b --lengths ${LENGTHS:-8k,16k,32k,64k,96k,128k} \
  --configs "${CONFIGS_SMALL:-baselines,star 16K+relay,star 8K+relay,auto}" --repeats 3 --out "$WORK/crossover"
[ "${LARGE:-1}" = 1 ] && step 200 python3 scripts/gpu_crossover.py --shape llama3-8b --lengths 64k,128k \
  --configs "${CONFIGS_LARGE:-baselines,star 16K+relay,auto}" --repeats 1 --out "$WORK/crossover"
cp "$WORK/stderr.log" "$OUT/" 2>/dev/null
tar -C "$WORK" -czf "$OUT/reports.tar.gz" .
