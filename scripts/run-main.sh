#!/usr/bin/env bash
# The main job: install what is needed, build, get the default corpus, prepare it, train a
# small MoE++ model and its vanilla twin (same FFN experts, same tokens, same seed) for a
# bounded time, then print them side by side with a generated sample from each.
#
#   MOEPP_MINUTES   total training budget in minutes, split between the two models (15)
#   MOEPP_PRESET    model preset: tiny, small, paper-0.6b (small)
#   MOEPP_WORK      where data and runs go (work)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MOEPP_MINUTES:-15}
preset=${MOEPP_PRESET:-small}
work=${MOEPP_WORK:-work}
batch=8
seq=128

bash scripts/setup-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target moepp-cli
moepp=build/moepp

bash scripts/get-corpus.sh "$work/corpus"
if [ ! -s "$work/kjv/train.bin" ]; then
  $moepp prepare --input "$work/corpus/kjv.txt" --out "$work/kjv" --vocab-size 4000
fi

# Both models train the same number of steps (same tokens). Size it from the vanilla
# model's speed (the slower of the two) so that both fit in the budget.
rm -rf "$work/runs/calibrate"
speed=$($moepp train --data "$work/kjv" --out "$work/runs/calibrate" --preset "$preset" --vanilla \
          --steps 12 --batch $batch --seq $seq --eval-batches 1 --log-every 100 | sed -E 's/.*"tokens_per_s": ([0-9.]+).*/\1/')
steps=$(awk -v m="$minutes" -v s="$speed" -v t=$((batch * seq)) 'BEGIN { n = int(0.85 * m * 60 / 2 * s / t); if (n < 20) n = 20; print n }')
echo "main: vanilla trains at ~${speed} tokens/s; both models get $steps steps of $((batch * seq)) tokens"

for kind in moepp vanilla; do
  flag=""; [ $kind = vanilla ] && flag="--vanilla"
  run="$work/runs/$kind"
  if [ -f "$run/trainer_state.json" ] && grep -q "\"step\": $steps," "$run/trainer_state.json"; then
    echo "main: $run already trained"; continue
  fi
  rm -rf "$run"
  echo "main: training $kind ($preset) ..."
  $moepp train --data "$work/kjv" --out "$run" --preset "$preset" $flag --steps "$steps" --batch $batch --seq $seq \
    --lr 2e-3 --eval-every $((steps / 4 > 0 ? steps / 4 : 1)) --checkpoint-every 500 --log-every 50 \
    --time-limit $((minutes * 60))
done

$moepp compare --run "$work/runs/moepp" --run "$work/runs/vanilla" --data "$work/kjv" --prompt "And God said" \
  --sample-tokens 60 --json "$work/compare.json"
