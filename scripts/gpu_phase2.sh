#!/usr/bin/env bash
# Phase 2 on one GPU: the CUDA tests, then the bench cells of the phase-2 targets with the captured
# decode beside the eager reference and transformers' static-cache generate. Run from the repo root
# on the GPU machine; OUT is where the logs and JSON go (default: ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/device.txt"
python3 -m pytest -q -x tests/test_gpu.py > "$OUT/test_gpu.log" 2>&1
status=$?
tail -30 "$OUT/test_gpu.log"
[ $status -eq 0 ] || exit $status
bench() { python3 -m starcli bench --device cuda "$@"; }
if [ "${CELLS:-all}" != "8b" ]; then
  bench --shape qwen2.5-0.5b --lengths 30k --modes star,dense,hf-static --decodes auto,eager \
    --question-tokens 48 --json "$OUT/qwen05b-30k.json" 2>&1 | tee "$OUT/qwen05b-30k.log" | grep -v '^\[bench\]'
fi
if [ "${CELLS:-all}" != "0.5b" ]; then
  bench --shape llama3-8b --lengths 128k --modes star,dense${PEER_8B:-} --relays 32k,0 --decodes ${DECODES_8B:-auto} \
    --question-tokens 48 --json "$OUT/llama8b-128k.json" 2>&1 | tee "$OUT/llama8b-128k.log" | grep -v '^\[bench\]'
fi
