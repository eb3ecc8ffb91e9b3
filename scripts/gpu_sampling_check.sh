#!/usr/bin/env bash
# GPU decode speed after fa6143b (Sampler on the logits' device + the loop guard) against a baseline
# package copy (default scripts/baseline_pkg, e.g. the starcli/ of 65c5e03): the engine's own bench
# (decode, default 0.5B shape, 30K, dense and star, captured decode) for both versions, then
# scripts/gpu_sampling_check.py (Session.answer with greedy / penalty / sampling) for both.
# Run from the repo root on the GPU machine; OUT gets the logs and JSON. Python runs from a scratch
# folder so that PYTHONPATH alone picks the package (python -m puts the cwd first on sys.path).
set -uo pipefail
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
BASE=${BASE:-$REPO/scripts/baseline_pkg}
mkdir -p "$OUT"
W=$(mktemp -d)
cd "$W"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
declare -A PKG=([current]=$REPO [baseline]=$BASE)
BENCH_OPTS="--device ${DEVICE:-cuda} --shape ${SHAPE:-qwen2.5-0.5b} --lengths ${LENGTH:-30k} --modes dense,star --decodes auto --decode-tokens 64 --repeats 5"

bench() {  # label, seed
  echo "== bench $1 seed $2: PYTHONPATH=${PKG[$1]} python3 -m starcli bench $BENCH_OPTS --seed $2"
  PYTHONPATH=${PKG[$1]} python3 -m starcli bench $BENCH_OPTS --seed "$2" --json "$OUT/bench-$1.json" --debug \
    > "$OUT/bench-$1-seed$2.log" 2>&1
  local rc=$?
  grep -v '^\[bench\]' "$OUT/bench-$1-seed$2.log" | tail -8
  return $rc
}
SEED=
for s in 0 1; do  # a random model's greedy answer may loop: the loop guard then ends it before the bench's last timed token
  if bench current $s; then SEED=$s; break; fi
done
bench baseline "${SEED:-0}"
if [ -z "$SEED" ]; then  # fallback: the current bench with the loop guard switched off (its cost is timed by the check)
  cat > "$W/noguard.py" <<'PY'
import runpy, sys
import starcli.star.engine as engine
engine.repeating_tail = lambda tokens: None
sys.argv = ["starcli"] + sys.argv[1:]
runpy.run_module("starcli", run_name="__main__")
PY
  echo "== bench current-noguard seed 0: PYTHONPATH=$REPO python3 noguard.py bench $BENCH_OPTS --seed 0"
  PYTHONPATH=$REPO python3 "$W/noguard.py" bench $BENCH_OPTS --seed 0 --json "$OUT/bench-current-noguard.json" --debug \
    > "$OUT/bench-current-noguard.log" 2>&1
  grep -v '^\[bench\]' "$OUT/bench-current-noguard.log" | tail -8
fi

check() {  # label, extra options
  local label=$1; shift
  echo "== check $label: PYTHONPATH=${PKG[$label]} python3 scripts/gpu_sampling_check.py --label $label $*"
  PYTHONPATH=${PKG[$label]} python3 "$REPO/scripts/gpu_sampling_check.py" --label "$label" --json "$OUT/check-$label.json" ${CHECK_OPTS:-} "$@" \
    > "$OUT/check-$label.log" 2>&1
  local rc=$?
  grep -v 'round' "$OUT/check-$label.log" | tail -12
  return $rc
}
check current
QSEED=$(python3 -c "import json; print(json.load(open('$OUT/check-current.json'))['question_seed'])" 2>/dev/null || echo 1)
check baseline --question-seed "$QSEED"

python3 - "$OUT" <<'PY' | tee "$OUT/table.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
print()
print("== table (ms/token, median)")
for label in ("current", "current-noguard", "baseline"):
    b = load(f"bench-{label}.json")
    if b is None and label == "current-noguard":
        continue
    cells = {c["mode"]: c for c in b["cells"]} if b else {}
    for mode in ("dense", "star"):
        c = cells.get(mode)
        v = f"{c['decode_ms_tok']:.3f}" if c and c.get("decode_ms_tok") else "FAILED"
        print(f"bench {mode:<5} 30k captured   {label:<8} {v:>8}  ({b['device'] if b else '-'}, seed {b['options']['seed'] if b else '-'})")
cur, base = load("check-current.json"), load("check-baseline.json")
names = list(cur["variants"]) if cur else []
for n in (base["variants"] if base else {}):
    if n not in names:
        names.append(n)
print(f"{'answer() 256 new tokens, dense 30K':<36} {'current':>9} {'tokens':>14} {'baseline':>9} {'tokens':>14}")
for n in names:
    row = []
    for r in (cur, base):
        v = r["variants"].get(n) if r else None
        row += [f"{v['ms_tok_median']:.3f}" if v else "-", "/".join(map(str, v["tokens"])) if v else "-"]
    print(f"{n:<36} {row[0]:>9} {row[1]:>14} {row[2]:>9} {row[3]:>14}")
PY
