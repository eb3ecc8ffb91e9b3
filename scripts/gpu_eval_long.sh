#!/usr/bin/env bash
# Accuracy of star configurations at long lengths on one GPU (issue 30): the default model's GGUF,
# brought over in pieces (../shared/GPU.md: split into 55 MiB pieces, one carried per call into
# $STAGE), joined and checked against its pinned SHA-256, then one `starcli eval` with the
# arguments given, greedy, YaRN x4, on CUDA. Writes $OUT/$NAME.json and .txt and prints the table.
#   STAGE=$HOME/stage NAME=e128 OUT=$OUT scripts/gpu_eval_long.sh --lengths 128k --samples 16 \
#       --tasks all --attention dense,star --block-sizes 16k,8k --relays 16k
set -uo pipefail
STAGE=${STAGE:-$HOME/stage}
NAME=${NAME:-eval}
OUT=${OUT:-gpu-out}
SHA256=$(python3 -c "from starcli.model.embedded import DEFAULT; print(DEFAULT.sha256)")
GGUF=$STAGE/default.gguf
export STARCLI_CACHE=${STARCLI_CACHE:-$HOME/starcli-cache}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$STARCLI_CACHE"
[ -f "$GGUF" ] || cat "$STAGE"/piece.* > "$GGUF"
echo "$SHA256  $GGUF" | sha256sum -c --quiet - || { echo "the joined GGUF does not match its pin"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/$NAME-device.txt"
CMD=(python3 -m starcli eval --model "$GGUF" --rope-scaling yarn:4 --device cuda --out "$OUT/$NAME.json" "$@")
echo "== $NAME: ${CMD[*]}"
start=$(date +%s)
"${CMD[@]}" > "$OUT/$NAME.txt" 2> "$OUT/$NAME.err"
rc=$?
echo "$NAME: exit $rc, wall $(( $(date +%s) - start ))s"
[ $rc -eq 0 ] || tail -20 "$OUT/$NAME.err"
cat "$OUT/$NAME.txt"
exit $rc
