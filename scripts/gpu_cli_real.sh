#!/usr/bin/env bash
# Eight questions about a ~30K-token part of this repository, asked in one run of the real default
# model (its GGUF at $GGUF): the default (captured decoding), --eager, and optionally an older tree
# ($OLD, a checkout's folder holding starcli/ with its `python -m starcli`) for a same-session comparison.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DOCS=(starcli/star starcli/ingest/loader.py starcli/ingest/directory.py)
QUESTIONS=(
  -q "Which function merges two partial attention results, and what does it compute from their log-sum-exp values? Answer in two sentences."
  -q "How does the engine decide which rank keeps the question and answer tokens, and why is only one rank holding them? Explain briefly."
  -q "What does the anchor block contain during phase one, and which rank computes it before sending it to the others? Explain briefly."
  -q "Which kernels can compute attention with the log-sum-exp, and how is the kernel chosen when the user asks for auto? List them briefly."
  -q "How are the document blocks assigned to ranks in the star partition, and what happens when there are more ranks than blocks?"
  -q "What does the relay option add to each block's attention, and what is its default value with the default block size? Explain briefly."
  -q "How are files inside a directory ordered and filtered when a directory is given as a source? Mention the options that control it."
  -q "Where is torch.distributed used in this code, and what happens to the collectives when the world size is one? Explain briefly."
)
OUT=$(cd "$OUT" && pwd)
ROOT=$PWD
ask() {  # name, the tree to run (a folder holding starcli/), extra options
  local name=$1 path=$2; shift 2
  # run from that tree's folder: python -m puts the working directory before PYTHONPATH
  (cd "$path" && PYTHONPATH=$path:/tmp/site python3 -m starcli ask "${DOCS[@]/#/$ROOT/}" "${QUESTIONS[@]}" \
    --model "$GGUF" --device cuda --json "$@" > "$OUT/real-$name.json" 2> "$OUT/real-$name.err")
  python3 - "$OUT/real-$name.json" "$name" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as exc:
    print(sys.argv[2], "failed:", exc); sys.exit()
a = r["answers"]
tokens = sum(x["answer_tokens"] for x in a)
print(f"{sys.argv[2]:<10} total {r.get('total_s', 0):6.2f} s  load {r['model_load_s']:5.2f} + warm-up {r.get('warmup_s') or 0:4.2f}  "
      f"doc {r['document_tokens']} tok  phase1 {r['phase1_s']:.3f} s  prefill {1e3 * sum(x['prefill_s'] for x in a) / len(a):6.1f} ms/q  "
      f"decode {tokens / max(1e-9, sum(x['decode_s'] for x in a)):6.1f} tok/s  {tokens} answer tokens")
PY
}
ask warmup "$PWD" --max-new-tokens 4 > /dev/null  # converts the GGUF once (cached) and compiles the kernels
ask new "$PWD"
ask eager "$PWD" --eager
[ -n "${OLD:-}" ] && ask old "$OLD"
python3 -c "import json; r=json.load(open('$OUT/real-new.json')); [print('Q:', a['question'][:60], '| A:', a['answer'][:160].replace(chr(10),' ')) for a in r['answers'][:3]]"
