#!/usr/bin/env bash
# The main job's logic (scripts/run-main.sh, what `make run` runs) on the tiny preset with a
# budget of seconds: two jobs keep two folders (the first left byte for byte as it was),
# `latest` names the newest, each ends with the table, the verdict, the budget share, the
# expert kinds and the next commands; and the MOEPP_STEPS=N line it prints repeats a job
# exactly: same steps, same weights.
# Usage: main_job_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
moepp="$(cd "$1" && pwd)/moepp"
src="$2"
source "$(dirname "$0")/lib.sh"

for i in $(seq 1 600); do echo "Line $i: the quick brown fox jumps over the lazy dog $((i % 11)) and God said so."; done > "$tmp/corpus.txt"
job() {
  env MOEPP_SKIP_SETUP=1 MOEPP_BIN="$moepp" MOEPP_CORPUS="$tmp/corpus.txt" MOEPP_PRESET=tiny MOEPP_MINUTES=0.1 \
    MOEPP_BATCH=2 MOEPP_SEQ=32 MOEPP_VOCAB=300 MOEPP_WORK="$tmp/work" "$@" bash "$src/scripts/run-main.sh"
}
jobs_here() { find "$tmp/work/runs" -mindepth 1 -maxdepth 1 -type d | sort; }

job >"$tmp/first.log" 2>&1
check "the first job succeeds" test $? -eq 0
first=$(jobs_here)
check "one job folder" test "$(echo "$first" | wc -l)" -eq 1
check "latest names it" test "$(readlink "$tmp/work/runs/latest")" = "$(basename "$first")"
(cd "$first" && find . -type f ! -path './plots/gnuplot.log' -exec md5sum {} + | sort -k2) >"$tmp/first.sums"
for f in report.txt compare.json job.json moepp/trainer_state.json vanilla/trainer_state.json moepp/model.safetensors; do
  check "the job wrote $f" test -s "$first/$f"
done
check "the report has the table" grep -q "^$first/moepp .*MoE++" "$first/report.txt"
check "the report has a verdict" grep -q "^Verdict: $first/moepp (MoE++) against $first/vanilla" "$first/report.txt"
check "the verdict names the FFN compute share" grep -q "% of the" "$first/report.txt"
check "the report says how much of the budget trained" grep -qE "of the 6 s budget: [0-9]+%" "$first/report.txt"
check "the report explains the expert kinds" grep -q "zero (discard" "$first/report.txt"
check "the report lists next commands" grep -q "generate -m $first/moepp" "$first/report.txt"
check "calibration is after warm-up (14 steps)" grep -q "calibration: 14 steps of each model" "$tmp/first.log"
if command -v gnuplot >/dev/null 2>&1; then check "the job drew the loss plot" test -s "$first/plots/loss.png"; fi
steps=$(sed -nE 's/.*"steps": ([0-9]+),.*/\1/p' "$first/job.json")
check "the report prints the line that repeats it" grep -q "MOEPP_STEPS=$steps MOEPP_PRESET=tiny MOEPP_CORPUS=$tmp/corpus.txt" "$first/report.txt"

sleep 1  # a new second: the second job's folder name differs by its time, not only by a suffix
job MOEPP_STEPS="$steps" >"$tmp/second.log" 2>&1
check "the repeated job succeeds" test $? -eq 0
check "the data folder is reused" grep -q "already prepared" "$tmp/second.log"
check "the repeat skips calibration" grep -q "calibration: skipped, MOEPP_STEPS=$steps" "$tmp/second.log"
second=$(jobs_here | grep -vx "$first")
check "two job folders" test "$(jobs_here | wc -l)" -eq 2
check "latest names the second" test "$(readlink "$tmp/work/runs/latest")" = "$(basename "$second")"
(cd "$first" && find . -type f ! -path './plots/gnuplot.log' -exec md5sum {} + | sort -k2) >"$tmp/first.after"
check "the first job's files are untouched" cmp "$tmp/first.sums" "$tmp/first.after"
for kind in moepp vanilla; do
  check "the repeat trains the same $kind weights" cmp "$first/$kind/model.safetensors" "$second/$kind/model.safetensors"
done
echo "main-job checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
