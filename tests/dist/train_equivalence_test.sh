#!/usr/bin/env bash
# Distributed training against one process (docs/distributed.md states the equivalence):
#   1. 20 steps of the tiny MoE++ model with DP 2, EP 2, DP 2 x EP 2 and EP 4 give the
#      one-process run's loss curve and final weights and moments (tests/dist/compare_runs.py:
#      1e-5 relative for the curves and each file as a whole, 1e-4 for single tensors).
#      With --accum 2 too (-np 2 --ep-size 2 against one process with --accum 2), and with
#      --capacity-factor 1 (slots dropped over capacity: the same ones).
#   2. A run stopped after 10 steps on 2 ranks, resumed on 4 (DP 2 x EP 2), continues the
#      same curve to the same weights.
#   3. The checkpoint the 4 ranks wrote loads in one process: `moepp eval` there gives the
#      validation loss the 4 ranks computed (distributed, expert parallel) at the end.
#   4. `moepp analyze` on 2 ranks writes the analysis one process writes: the same tokens.tsv,
#      byte for byte, and analysis.json with the same counts and variances to 1e-9.
#   5. Faults: ranks started with different options are refused at start; an error on one
#      rank ends the job naming the rank; a killed rank ends the job non-zero with mpirun's
#      message naming it, and the last complete checkpoint still loads.
# Usage: train_equivalence_test.sh MOEPP MPIRUN TESTS_DIST_DIR
set -uo pipefail
moepp="$1" mpirun="$2" here="$3"
python=/usr/bin/python3; [ -x "$python" ] || python=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
for i in $(seq 1 300); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done > "$tmp/corpus.txt"
"$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 300 >/dev/null 2>&1 || fail "prepare"
common=(--data "$tmp/data" --preset tiny --seq 16 --eval-batches 2 --seed 3 --threads 1)
args=("${common[@]}" --steps 20 --batch 4)
compare() { "$python" "$here/compare_runs.py" "${3:-$tmp/single}" "$1" --steps 20 || fail "$2 differs from one process"; }

"$moepp" train "${args[@]}" --out "$tmp/single" >"$tmp/single.log" 2>&1 || { cat "$tmp/single.log"; fail "one-process run"; }

# 1. The layouts: ranks, expert-parallel group size.
for layout in "2 1" "2 2" "4 2" "4 4"; do
  set -- $layout
  run="$tmp/np$1_ep$2"
  "$mpirun" -np "$1" "$moepp" train "${args[@]}" --out "$run" --ep-size "$2" --check-replicas >"$run.log" 2>&1 \
    || { cat "$run.log"; fail "mpirun -np $1 --ep-size $2"; }
  echo "-np $1 --ep-size $2:"
  compare "$run" "-np $1 --ep-size $2"
done

# 1b. Gradient accumulation: the sums start during the last micro-batch's backward only.
"$moepp" train "${args[@]}" --accum 2 --out "$tmp/single_accum" >"$tmp/single_accum.log" 2>&1 \
  || { cat "$tmp/single_accum.log"; fail "one-process run with --accum 2"; }
"$mpirun" -np 2 "$moepp" train "${args[@]}" --accum 2 --ep-size 2 --out "$tmp/accum" >"$tmp/accum.log" 2>&1 \
  || { cat "$tmp/accum.log"; fail "mpirun -np 2 --ep-size 2 --accum 2"; }
echo "-np 2 --ep-size 2 --accum 2:"
compare "$tmp/accum" "-np 2 --ep-size 2 --accum 2" "$tmp/single_accum"

# 1c. A capacity factor: the ranks' sequences are one batch, so each expert's capacity and
#     its first slots in token order are the one process's (moe/dispatch.h).
"$moepp" train "${args[@]}" --capacity-factor 1 --out "$tmp/single_capacity" >"$tmp/single_capacity.log" 2>&1 \
  || { cat "$tmp/single_capacity.log"; fail "one-process run with --capacity-factor 1"; }
"$mpirun" -np 2 "$moepp" train "${args[@]}" --capacity-factor 1 --ep-size 2 --out "$tmp/capacity" >"$tmp/capacity.log" 2>&1 \
  || { cat "$tmp/capacity.log"; fail "mpirun -np 2 --ep-size 2 --capacity-factor 1"; }
echo "-np 2 --ep-size 2 --capacity-factor 1:"
compare "$tmp/capacity" "-np 2 --ep-size 2 --capacity-factor 1" "$tmp/single_capacity"
"$python" - "$tmp/capacity/metrics.jsonl" <<'PY' || fail "the capacity run dropped no slot"
import json, sys
shares = [json.loads(l)["routing"].get("dropped_share", 0) for l in open(sys.argv[1]) if '"routing"' in l]
assert shares and min(shares) > 0, shares
print(f"  dropped share per step {min(shares):.3f}-{max(shares):.3f}")
PY

# 2. Stop on 2 ranks (pure data parallel), resume on 4 (expert parallel).
"$mpirun" -np 2 "$moepp" train "${args[@]}" --out "$tmp/moved" --stop-after 10 >"$tmp/moved.log" 2>&1 \
  || { cat "$tmp/moved.log"; fail "the first half on 2 ranks"; }
"$mpirun" -np 4 "$moepp" train "${args[@]}" --out "$tmp/moved" --ep-size 2 --resume >>"$tmp/moved.log" 2>&1 \
  || { cat "$tmp/moved.log"; fail "the resume on 4 ranks"; }
echo "10 steps on 2 ranks, resumed for 10 on 4 (--ep-size 2):"
compare "$tmp/moved" "the resumed run"

# 3. The 4-rank checkpoint in one process: its validation loss is the one the ranks reported.
"$moepp" eval --model "$tmp/np4_ep2" --data "$tmp/data" --batch 4 --seq 16 --max-batches 2 --threads 1 \
  >"$tmp/eval.json" 2>"$tmp/eval.log" || { cat "$tmp/eval.log"; fail "eval of the 4-rank checkpoint"; }
"$python" - "$tmp/eval.json" "$tmp/np4_ep2/metrics.jsonl" <<'PY' || fail "the 4-rank checkpoint evaluates differently in one process"
import json, sys
one = json.load(open(sys.argv[1]))
ranks = [json.loads(l) for l in open(sys.argv[2]) if '"val_loss"' in l][-1]
rel = abs(one["loss"] - ranks["val_loss"]) / ranks["val_loss"]
print(f"eval in one process {one['loss']!r} over {one['tokens']} tokens; 4 ranks {ranks['val_loss']!r} "
      f"over {ranks['val_tokens']}: relative {rel:.1e}")
sys.exit(0 if rel < 1e-6 and one["tokens"] == ranks["val_tokens"] else 1)
PY

# 4. analyze: the ranks share the text's batches; one report, equal to one process's.
an=(analyze --model "$tmp/np4_ep2" --text "$tmp/corpus.txt" --seq 32 --batch 2 --min-count 2 --no-plots --threads 1)
"$moepp" "${an[@]}" --out "$tmp/an1" >/dev/null 2>"$tmp/an1.log" || { cat "$tmp/an1.log"; fail "analyze in one process"; }
"$mpirun" -np 2 "$moepp" "${an[@]}" --out "$tmp/an2" >/dev/null 2>"$tmp/an2.log" || { cat "$tmp/an2.log"; fail "analyze on 2 ranks"; }
cmp -s "$tmp/an1/tokens.tsv" "$tmp/an2/tokens.tsv" || fail "analyze on 2 ranks: tokens.tsv differs from one process's"
"$python" - "$tmp/an1/analysis.json" "$tmp/an2/analysis.json" <<'PY' || fail "analyze on 2 ranks: analysis.json differs"
import json, sys
def same(a, b, at):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), at
        for k in a: same(a[k], b[k], f"{at}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), at
        for i, (x, y) in enumerate(zip(a, b)): same(x, y, f"{at}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a)), f"{at}: {a} vs {b}"
    else:
        assert a == b, f"{at}: {a} vs {b}"
one, two = (json.load(open(p)) for p in sys.argv[1:3])
one.pop("text"), two.pop("text")
same(one, two, "analysis")
print(f"analyze on 2 ranks = one process: {one['tokens']} tokens, {len(one['layers'])} MoE layers, "
      f"FFN experts per token {one['ffn_experts_per_token']:.4f}")
PY

# 5a. Different options on different ranks: refused before any step.
"$mpirun" -np 1 "$moepp" train "${args[@]}" --out "$tmp/mixed" : -np 1 "$moepp" train "${args[@]}" --lr 1e-2 \
  --out "$tmp/mixed" >"$tmp/mixed.log" 2>&1 && fail "ranks with different --lr were accepted"
grep -q "different configurations" "$tmp/mixed.log" || { cat "$tmp/mixed.log"; fail "no message for mixed options"; }
[ -e "$tmp/mixed/metrics.jsonl" ] && [ -s "$tmp/mixed/metrics.jsonl" ] && fail "a refused run trained"
echo "mixed options: refused ($(grep -m1 'error:' "$tmp/mixed.log"))"

# 5b. An error on the ranks: the job ends, naming a rank.
"$mpirun" -np 2 "$moepp" train "${common[@]}" --steps 20 --batch 3 --out "$tmp/odd" >"$tmp/odd.log" 2>&1 && fail "--batch 3 on 2 ranks"
grep -q "error: rank [01] of 2: .*multiple of the 2 ranks" "$tmp/odd.log" || { cat "$tmp/odd.log"; fail "no rank named"; }
echo "an error on the ranks: $(grep -m1 'error: rank' "$tmp/odd.log")"

# 5c. A rank killed mid-run: mpirun exits non-zero naming it; the last checkpoint loads.
"$mpirun" -np 2 "$moepp" train "${common[@]}" --batch 4 --steps 100000 --checkpoint-every 5 --out "$tmp/killed" \
  >"$tmp/killed.log" 2>&1 &
launcher=$!
for _ in $(seq 1 300); do [ -e "$tmp/killed/current/trainer_state.json" ] && break; sleep 0.1; done
[ -e "$tmp/killed/current/trainer_state.json" ] || { kill $launcher; fail "no checkpoint within 30 s"; }
victim=$(pgrep -P $launcher | tail -1)
[ -n "$victim" ] || { kill $launcher; fail "no rank process under mpirun"; }
kill -9 "$victim"
wait $launcher && fail "the job exited 0 after a rank was killed"
grep -Eq "rank [0-9]+ .*(signal 9|Killed)|process rank [0-9]+" "$tmp/killed.log" || { cat "$tmp/killed.log"; fail "no rank named"; }
echo "a killed rank: $(grep -E -m1 'rank [0-9]+' "$tmp/killed.log")"
"$moepp" eval --model "$tmp/killed" --data "$tmp/data" --batch 4 --seq 16 --max-batches 1 --threads 1 >/dev/null 2>"$tmp/after.log" \
  || { cat "$tmp/after.log"; fail "the last checkpoint of the killed job does not load"; }
echo "the killed job's last checkpoint (step $(sed -nE 's/.*"step": *([0-9]+).*/\1/p' "$tmp/killed/current/trainer_state.json" | head -1)) loads"
echo "PASS"
