#!/usr/bin/env bash
# Crash consistency of checkpoints: a training run that checkpoints every step is killed
# with SIGKILL just before its N-th file operation (MOEPP_KILL_AT_FILE_OP, counted in
# io/atomic_file), for N = 1, 1 + STRIDE, ... until a run finishes unkilled; each is then
# resumed (or started again when no checkpoint was published yet). Every resumed run must
# reproduce the uninterrupted run's loss curve bit for bit, or refuse with a message;
# never diverge silently.
# Usage: crash_consistency_test.sh BUILD_DIR [STRIDE]   (STRIDE 1 = every operation)
set -uo pipefail
moepp="$1/moepp"
stride=${2:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 300); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done > "$tmp/corpus.txt"
"$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 300 >/dev/null 2>&1 || { echo "prepare failed"; exit 1; }
args=(--data "$tmp/data" --preset tiny --steps 3 --batch 2 --seq 16 --eval-batches 1 --checkpoint-every 1 --threads 1)
losses() { sed -nE 's/^\{"balance_loss":[^,]*,"grad_norm":[^,]*,"lm_loss":[^,]*,"loss":([^,]*),.*"step":([0-9]+),.*/\2 \1/p' "$1/metrics.jsonl"; }
"$moepp" train "${args[@]}" --out "$tmp/ref" >/dev/null 2>&1 || { echo "reference run failed"; exit 1; }
losses "$tmp/ref" > "$tmp/ref.losses"
[ "$(wc -l < "$tmp/ref.losses")" -eq 3 ] || { echo "reference run logged no losses:"; head -3 "$tmp/ref/metrics.jsonl"; exit 1; }
same=0 refused=0 diverged=0 n=1
while :; do
  run="$tmp/k$n"
  MOEPP_KILL_AT_FILE_OP=$n "$moepp" train "${args[@]}" --out "$run" >/dev/null 2>&1
  rc=$?
  [ $rc -eq 0 ] && { rm -rf "$run"; break; }  # no N-th operation: every kill point was tried
  if [ $rc -ne 137 ]; then echo "kill at op $n: exit $rc, not SIGKILL"; diverged=$((diverged + 1)); fi
  if [ -e "$run/current" ]; then
    "$moepp" train "${args[@]}" --out "$run" --resume >"$run.log" 2>&1
  else  # killed before the first checkpoint was published: nothing to resume, start again
    "$moepp" train "${args[@]}" --out "$run" >"$run.log" 2>&1
  fi
  rc=$?
  if [ $rc -ne 0 ]; then
    if grep -q "^error: " "$run.log"; then refused=$((refused + 1)); echo "kill at op $n: refused: $(grep '^error' "$run.log")"
    else diverged=$((diverged + 1)); echo "kill at op $n: resume failed without a message (exit $rc)"; cat "$run.log"; fi
  elif losses "$run" | cmp -s - "$tmp/ref.losses"; then
    same=$((same + 1))
  else
    diverged=$((diverged + 1)); echo "kill at op $n: the resumed loss curve differs"; losses "$run" | diff - "$tmp/ref.losses"
  fi
  leftovers=$(find "$run" -name '*.tmp-*' | wc -l)
  [ "$leftovers" -eq 0 ] || { diverged=$((diverged + 1)); echo "kill at op $n: $leftovers temporaries left after the resumed run"; }
  rm -rf "$run" "$run.log"
  n=$((n + stride))
done
echo "crash-consistency: $((n - 1)) file operations, $(( (n - 1 + stride - 1) / stride )) kill points: $same identical, $refused refused, $diverged diverged"
echo "crash: $((same + refused)) passed, $diverged failed"
[ $diverged -eq 0 ] && [ $same -gt 0 ]
