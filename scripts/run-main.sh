#!/usr/bin/env bash
# The main job (`make run`): install what is needed, build, get the default corpus, prepare
# it, then train a small MoE++ model and its vanilla twin (same FFN experts, same tokens,
# same seed, same number of steps) within a time budget, and explain the outcome: a table,
# a verdict in words, plots, and what to run next.
#
# Every job writes a new folder work/runs/DATE-PRESET (work/runs/latest points to the
# newest) and never deletes an earlier one. The step count comes from a calibration after
# warm-up (both models, a few steps each) so that the two runs fill the budget; the job
# prints the MOEPP_STEPS=N that repeats it exactly.
#
#   MOEPP_MINUTES   the job's training budget in minutes, calibration included (15)
#   MOEPP_PRESET    model preset: tiny, small, paper-0.6b (small)
#   MOEPP_WORK      where data and job folders go (work)
#   MOEPP_STEPS     train exactly this many steps each, no calibration (to repeat a job)
#   MOEPP_CORPUS    a UTF-8 text file to train on instead of the King James Bible
#   MOEPP_VOCAB     vocabulary of a newly trained tokenizer (4000)
#   MOEPP_BATCH, MOEPP_SEQ   sequences per step and tokens per sequence (8, 128)
#   MOEPP_SKIP_SETUP=1       no apt-get and no build: run MOEPP_BIN (build/moepp) as it is
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MOEPP_MINUTES:-15}
preset=${MOEPP_PRESET:-small}
work=${MOEPP_WORK:-work}
batch=${MOEPP_BATCH:-8}
seq=${MOEPP_SEQ:-128}
vocab=${MOEPP_VOCAB:-4000}
moepp=${MOEPP_BIN:-build/moepp}
budget=$(awk -v m="$minutes" 'BEGIN { printf "%.1f", m * 60 }')
eval_batches=16

phase() { printf '\nmain: [%s/6] %s\n' "$1" "$2"; }
# A number field of a one-line JSON object: json_number FIELD FILE
json_number() { sed -nE "s/.*\"$1\": (-?[0-9.eE+-]+).*/\1/p" "$2" | head -n 1; }

if [ "${MOEPP_SKIP_SETUP:-0}" != 1 ]; then
  phase 1 "dependencies and build"
  bash scripts/setup-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" --target moepp-cli
else
  phase 1 "dependencies and build: skipped (MOEPP_SKIP_SETUP=1), using $moepp"
fi

phase 2 "corpus and tokenizer"
if [ -n "${MOEPP_CORPUS:-}" ]; then
  corpus=$MOEPP_CORPUS
  name=$(basename "$corpus"); data="$work/data-${name%.*}"
else
  bash scripts/get-corpus.sh "$work/corpus"
  corpus="$work/corpus/kjv.txt"; data="$work/kjv"
fi
if [ -s "$data/train.bin" ]; then
  echo "main: $data already prepared"
else
  echo "main: training a $vocab-piece tokenizer on $corpus and encoding it (a minute for the Bible) ..."
  "$moepp" prepare --input "$corpus" --out "$data" --vocab-size "$vocab"
fi

# A new job folder, never an existing one.
stamp=$(date +%Y%m%d-%H%M%S)
job="$work/runs/$stamp-$preset"; n=2
while [ -e "$job" ]; do job="$work/runs/$stamp-$preset-$n"; n=$((n + 1)); done
mkdir -p "$job"
ln -sfn "$(basename "$job")" "$work/runs/latest"
echo "main: this job's folder is $job"

tokens_per_step=$((batch * seq))
if [ -n "${MOEPP_STEPS:-}" ]; then
  phase 3 "calibration: skipped, MOEPP_STEPS=$MOEPP_STEPS"
  steps=$MOEPP_STEPS
else
  # Each model trains 14 steps; its speed is the median of steps 7-14, after the slow first
  # steps (page faults, first-touch allocation, kernel selection). Only this phase and the
  # two runs count against the budget, not the setup above.
  phase 3 "calibration: 14 steps of each model to measure its speed after warm-up"
  mkdir -p "$job/calibration"
  cal_start=$(date +%s)
  for kind in vanilla moepp; do
    flag=""; [ $kind = vanilla ] && flag="--vanilla"
    echo "main: calibrating $kind ..."
    "$moepp" train --data "$data" --out "$job/calibration/$kind" --preset "$preset" $flag --steps 14 --batch "$batch" \
      --seq "$seq" --eval-batches 1 --log-every 100 >"$job/calibration/$kind.json" 2>/dev/null
    sed -nE 's/.*"step":([0-9]+),.*"tokens_per_s":([0-9.eE+-]+).*/\1 \2/p' "$job/calibration/$kind/metrics.jsonl" |
      awk '$1 > 6 { print $2 }' | sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }' >"$job/calibration/$kind.speed"
    printf 'main: %s trains at %.0f tokens/s (median of steps 7-14)\n' $kind "$(cat "$job/calibration/$kind.speed")"
  done
  speed_v=$(cat "$job/calibration/vanilla.speed")
  speed_m=$(cat "$job/calibration/moepp.speed")
  spent=$(( $(date +%s) - cal_start ))
  # What is left of the budget goes to the two runs: steps at each model's speed, plus 4
  # validation passes each (3 along the way, 1 at the end: forward only, ~1/3 of a step's
  # cost per token), with 3% kept for start-up and checkpoints.
  steps=$(awk -v b="$budget" -v s="$spent" -v sv="$speed_v" -v sm="$speed_m" -v t="$tokens_per_step" \
              -v e="$((4 * eval_batches * batch * seq))" 'BEGIN {
            left = 0.97 * (b - s) - e / (3 * sv) - e / (3 * sm)
            n = int(left / (t / sv + t / sm)); if (n < 20) n = 20; print n }')
  echo "main: calibration took ${spent}s; each model gets $steps steps of $tokens_per_step tokens"
fi
every=$((steps / 4 > 0 ? steps / 4 : 1))
cat >"$job/job.json" <<EOF
{"preset": "$preset", "minutes": $minutes, "steps": $steps, "batch": $batch, "seq": $seq, "data": "$data", "started": "$stamp"}
EOF

step_no=4
for kind in moepp vanilla; do
  flag=""; label="MoE++"
  [ $kind = vanilla ] && flag="--vanilla" && label="vanilla MoE"
  phase $step_no "training $label ($preset preset, $steps steps; progress below)"
  "$moepp" train --data "$data" --out "$job/$kind" --preset "$preset" $flag --steps "$steps" --batch "$batch" \
    --seq "$seq" --lr 2e-3 --eval-every "$every" --eval-batches $eval_batches --checkpoint-every 500 --log-every 50 \
    >"$job/$kind.train.json"
  step_no=$((step_no + 1))
done

phase 6 "evaluating both on the whole validation split, samples, plots"
"$moepp" compare --run "$job/moepp" --run "$job/vanilla" --data "$data" --prompt "And God said" --sample-tokens 60 \
  --json "$job/compare.json" | tee "$job/report.txt"
"$moepp" plot "$job/moepp" "$job/vanilla" --out "$job/plots" >/dev/null

train_m=$(json_number train_seconds "$job/moepp/trainer_state.json")
train_v=$(json_number train_seconds "$job/vanilla/trainer_state.json")
awk -v m="$train_m" -v v="$train_v" -v b="$budget" -v c="${spent:-0}" 'BEGIN {
  printf "\nBudget: the two runs trained for %.0f s (MoE++ %.0f s, vanilla %.0f s, validation passes included)\n", m + v, m, v
  printf "  of the %.0f s budget: %.0f%%; calibration took %.0f s (%.0f%%).\n", b, 100 * (m + v) / b, c, 100 * c / b }' |
  tee -a "$job/report.txt"
repeat="MOEPP_STEPS=$steps MOEPP_PRESET=$preset"
[ -n "${MOEPP_CORPUS:-}" ] && repeat="$repeat MOEPP_CORPUS=$MOEPP_CORPUS MOEPP_VOCAB=$vocab"
[ "$batch" != 8 ] && repeat="$repeat MOEPP_BATCH=$batch"
[ "$seq" != 128 ] && repeat="$repeat MOEPP_SEQ=$seq"
[ "$work" != work ] && repeat="$repeat MOEPP_WORK=$work"
cat <<EOF | tee -a "$job/report.txt"

What the expert kinds are: an FFN expert is a full feed-forward network; MoE++ adds three
zero-computation experts a token can pick instead: zero (discard: adds nothing), copy (skip:
passes the token on unchanged) and constant (replace: blends in a learned vector).

Everything is in $job (work/runs/latest points to it):
  report.txt, compare.json   the table and verdict above
  plots/                     training curves: loss.png, ffn_per_token.png, slot_shares.png, ...
  moepp/, vanilla/           model folders with metrics.jsonl
Next:
  $moepp generate -m $job/moepp -p "And the LORD said" -n 60
  $moepp analyze --model $job/moepp --text $corpus --max-tokens 20000
  $moepp plot $job/moepp $job/vanilla --out my-plots
  $moepp experiment --plan experiments/moepp-vs-moe.json --data $data --out $work/exp   # tau sweep, ~2 h
Repeat this job exactly (same steps, same seed, a new folder): $repeat make run
EOF
