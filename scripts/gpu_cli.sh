#!/usr/bin/env bash
# The CLI end to end on one GPU, cold (a new process each run): a random-weight folder of the
# default model's shape unless MODEL is given, a document of DOC_TOKENS byte tokens unless DOC is
# given. Prints each run's report; the JSON goes to OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -z "${MODEL:-}" ]; then
  MODEL=/tmp/random-qwen05b
  [ -d $MODEL ] || python3 -m starcli.tools.random_model --shape qwen2.5-0.5b --out $MODEL --max-positions 65536 --device cuda
fi
if [ -z "${DOC:-}" ]; then
  DOC=/tmp/doc.txt
  python3 -c "import random; r=random.Random(0); print(''.join(r.choice('abcdefghij klmnop\n') for _ in range(${DOC_TOKENS:-30000})), end='')" > $DOC
fi
run() {  # name, then extra options
  local name=$1; shift
  python3 -m starcli ask "$DOC" "${QUESTIONS[@]}" --model "$MODEL" --device cuda --json "$@" > "$OUT/cli-$name.json" 2> "$OUT/cli-$name.err"
  python3 - "$OUT/cli-$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["answers"]
print(f"{sys.argv[2]:<14} total {r.get('total_s', 0):6.2f} s  load {r['model_load_s']:5.2f}  phase1 {r['phase1_s']:.3f} s  "
      f"prefill {1e3 * sum(x['prefill_s'] for x in a) / len(a):6.1f} ms  decode {sum(x['answer_tokens'] for x in a) / max(1e-9, sum(x['decode_s'] for x in a)):6.1f} tok/s  "
      f"capture {sum(x.get('capture_s') or 0 for x in a):.3f} s  answers {len(a)} of {sum(x['answer_tokens'] for x in a)} tokens")
PY
}
