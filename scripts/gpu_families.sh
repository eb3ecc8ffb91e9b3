#!/usr/bin/env bash
# Model families on one GPU: the CUDA tests (kernels, and windows, caps, sinks, chunks and latent
# heads against transformers), then phase 2 of a Gemma 3 shape, whose five sliding-window layers
# in six read only their window, beside the same shape with every layer global. Run from the repo
# root on the GPU machine; OUT is where the logs and JSON go (default: ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -m pytest -q tests/test_gpu.py > "$OUT/test_gpu.log" 2>&1
echo "test_gpu exit $?"
tail -15 "$OUT/test_gpu.log"
for shape in gemma3-4b gemma3-4b-global; do
  python3 -m starcli bench --device cuda --shape "$shape" --lengths ${LENGTHS:-32k,128k} --modes dense \
    --question-tokens 32 --decode-tokens 64 --json "$OUT/$shape.json" 2>&1 | tee "$OUT/$shape.log" | grep -v '^\[bench\]'
done
