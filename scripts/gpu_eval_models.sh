#!/usr/bin/env bash
# Accuracy of one real model (a GGUF file) on a JSONL question set (e.g. the code-qa set: factual
# questions about real source files), dense vs star attention, greedy vs the model's own sampling:
#   python3 -m starcli eval --data $DATA --model $GGUF --attention dense,star --decoding greedy,defaults
#       --device cuda --out $OUT/$NAME.json > $OUT/$NAME.txt 2> $OUT/$NAME.err
# and prints the table ($OUT/$NAME.txt) last, with the eval's wall time and exit status.
# Run from the repo root on the GPU machine (python -m starcli then takes this tree's package):
#   GGUF=/path/model.gguf DATA=/path/code-qa.jsonl NAME=q05 OUT=/path/out scripts/gpu_eval_models.sh
# STARCLI_CACHE (default $HOME/starcli-cache) keeps the GGUF's conversion between runs; the first use
# of a GGUF converts it there. Extra eval options may be passed as arguments (e.g. --samples 8).
# Needs the gguf and pypdf packages besides torch and transformers.
set -uo pipefail
: "${GGUF:?set GGUF to the model file (.gguf)}"
: "${DATA:?set DATA to the JSONL question file}"
NAME=${NAME:-$(basename "$GGUF" .gguf)}
OUT=${OUT:-gpu-out}
export STARCLI_CACHE=${STARCLI_CACHE:-$HOME/starcli-cache}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$STARCLI_CACHE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/$NAME-device.txt"
CMD=(python3 -m starcli eval --data "$DATA" --model "$GGUF" --attention dense,star --decoding greedy,defaults
     --device cuda --out "$OUT/$NAME.json" "$@")
echo "== $NAME: ${CMD[*]} > $OUT/$NAME.txt 2> $OUT/$NAME.err  (STARCLI_CACHE=$STARCLI_CACHE)"
start=$(date +%s.%N)
"${CMD[@]}" > "$OUT/$NAME.txt" 2> "$OUT/$NAME.err"
rc=$?
end=$(date +%s.%N)
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "$NAME: exit $rc, wall ${wall}s" | tee "$OUT/$NAME-wall.txt"
if [ $rc -ne 0 ]; then
  echo "== last lines of $OUT/$NAME.err"
  tail -30 "$OUT/$NAME.err"
fi
echo "== $NAME table"
cat "$OUT/$NAME.txt"
exit $rc
