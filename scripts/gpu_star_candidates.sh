#!/usr/bin/env bash
# Issue 30 on one GPU, run from the repo root on the GPU machine: star configurations between 16K
# blocks + relay and 8K blocks + relay against transformers' forward at 128K, on the 8B shape and
# the 0.5B shape (scripts/gpu_crossover.py), and, with BEFORE=DIR (an earlier tree of the
# repository), that tree's star 16K + relay on the same machine right after. Prints the tables.
set -uo pipefail
OUT=${OUT:-gpu-out}
CONFIGS=${CONFIGS:-exact,star 16K+relay,star 10K+relay,star 8K+relay}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
crossover() {  # tree, shape, repeats, configs
  echo "## $1: $2, $4"
  (cd "$1" && PYTHONPATH=$PWD timeout 240 python3 scripts/gpu_crossover.py --shape "$2" --lengths 128k --configs "$4" \
    --repeats "$3" --out "$OUT/$(basename "$1")-$2") 2>> "$OUT/stderr.log" | tail -4
}
crossover "$PWD" llama3-8b 1 "$CONFIGS"
[ -n "${BEFORE:-}" ] && crossover "$BEFORE" llama3-8b 1 "star 16K+relay"
crossover "$PWD" qwen2.5-0.5b 3 "$CONFIGS"
[ -n "${BEFORE:-}" ] && crossover "$BEFORE" qwen2.5-0.5b 3 "star 16K+relay"
exit 0
