#!/usr/bin/env bash
# End-to-end checks of the moepp command line: every command's --help, prepare -> train ->
# eval/generate/logits/grad/info on a tiny corpus, one-line errors with a non-zero exit,
# and Ctrl-C during training writing a checkpoint that resumes.
# Usage: cli_test.sh BUILD_DIR
set -uo pipefail
moepp="$1/moepp"
source "$(dirname "$0")/lib.sh"

for c in prepare train eval generate logits grad info compare convert experiment analyze tokenize plot serve; do check "$c --help" "$moepp" "$c" --help; done

# A small corpus: numbered sentences, enough for a 400-piece tokenizer.
for i in $(seq 1 400); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done > "$tmp/corpus.txt"
check "prepare" "$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 400
check "train" "$moepp" train --data "$tmp/data" --out "$tmp/run" --preset tiny --steps 6 --batch 2 --seq 16 --eval-batches 1
check "eval" "$moepp" eval --model "$tmp/run" --data "$tmp/data" --batch 2 --seq 16 --max-batches 2
check "generate" "$moepp" generate --model "$tmp/run" --prompt "Line 3" -n 5 --seed 2
check "info" "$moepp" info --model "$tmp/run"
check "generate bf16" "$moepp" generate --model "$tmp/run" --prompt "Line 3" -n 5 --dtype bf16
check "logits q8_0" "$moepp" logits --model "$tmp/run" --ids 1,5,9 --out "$tmp/logits_q8.safetensors" --dtype q8_0
check "generate q4" "$moepp" generate --model "$tmp/run" --prompt "Line 3" -n 5 --dtype q4
check "generate, bf16 KV cache" "$moepp" generate --model "$tmp/run" --prompt "Line 3" -n 5 --kv-dtype bf16 --dtype q8_0
check_error "unknown KV dtype" "--kv-dtype: f16 not in {auto,f32,bf16}" "$moepp" generate --model "$tmp/run" --prompt "x" --kv-dtype f16
# --kv-dtype auto (the default): a bf16 cache beside q8_0 weights, the logits those of a named
# bf16 cache bit for bit, and not those of an f32 one (the prompt's keys and values are read
# back from the cache they are stored in).
for kv in bf16 f32; do
  check "logits q8_0, $kv KV cache" "$moepp" logits --model "$tmp/run" --ids 1,5,9 --out "$tmp/logits_q8_$kv.safetensors" --dtype q8_0 --kv-dtype $kv
done
check "the default KV cache beside q8_0 weights is bf16" cmp "$tmp/logits_q8.safetensors" "$tmp/logits_q8_bf16.safetensors"
check "a bf16 KV cache changes q8_0 logits" bash -c '! cmp -s "$0" "$1"' "$tmp/logits_q8.safetensors" "$tmp/logits_q8_f32.safetensors"
check "analyze" "$moepp" analyze --model "$tmp/run" --text "$tmp/corpus.txt" --out "$tmp/an" --seq 16 --no-plots
grep -q '"ffn_experts_per_token"' "$tmp/an/analysis.json" || { echo "FAIL: analyze wrote no analysis.json"; fail=$((fail + 1)); }
check_error "analyze without text" "--model and --text are required" "$moepp" analyze --model "$tmp/run"
check "logits" "$moepp" logits --model "$tmp/run" --ids 1,5,9 --out "$tmp/logits.safetensors"
echo "1 5 9 12" > "$tmp/ids.txt"
check "grad @file" "$moepp" grad --model "$tmp/run" --ids @"$tmp/ids.txt" --out "$tmp/grad.safetensors"

check_error "id outside vocab" "outside the vocabulary of 400" "$moepp" logits --model "$tmp/run" --ids 1,400 --out "$tmp/x.safetensors"
check_error "bad id" "'x' is not a token id" "$moepp" logits --model "$tmp/run" --ids 1,x --out "$tmp/x.safetensors"
check_error "not a model folder" "not a model folder" "$moepp" info --model "$tmp"
check_error "existing run" "already holds a run" "$moepp" train --data "$tmp/data" --out "$tmp/run" --preset tiny --steps 2
check_error "unknown preset" "unknown preset" "$moepp" train --data "$tmp/data" --out "$tmp/run2" --preset huge --steps 2
check_error "negative capacity factor" "--capacity-factor is -1; it must be a finite number, 0 or more" "$moepp" train --data "$tmp/data" --out "$tmp/run2" --preset tiny --steps 2 --capacity-factor -1
check_error "infinite capacity factor" "--capacity-factor is inf; it must be a finite number" "$moepp" train --data "$tmp/data" --out "$tmp/run2" --preset tiny --steps 2 --capacity-factor inf
check_error "capacity with tau 0" "balance_tau = 0 gives FFN experts no slot" "$moepp" train --data "$tmp/data" --out "$tmp/run2" --preset tiny --steps 2 --capacity-factor 1 --tau 0
check_error "unknown precision" "--precision: f16 not in {f32,bf16}" "$moepp" train --data "$tmp/data" --out "$tmp/run2" --preset tiny --steps 2 --precision f16
# Mixed precision where the CPU multiplies bf16 natively (the trainer refuses it elsewhere, naming the CPU's lack).
if "$moepp" train --data "$tmp/data" --out "$tmp/bf16" --preset tiny --steps 4 --batch 2 --seq 16 --eval-batches 1 --precision bf16 >"$tmp/bf16.log" 2>&1; then
  check "bf16 run records its precision" grep -q '"precision": "bf16"' "$tmp/bf16/trainer_state.json"
  check_error "bf16 run resumed as f32" "conflicts with the run's recorded precision bf16" "$moepp" train --data "$tmp/data" --out "$tmp/bf16" --steps 6 --resume --precision f32
else
  check "bf16 refused only for want of bf16 products" grep -q "needs a CPU with AVX-512 BF16 or AMX" "$tmp/bf16.log"
fi

# Ctrl-C: SIGINT mid-run writes a checkpoint; --resume finishes the run.
"$moepp" train --data "$tmp/data" --out "$tmp/int" --preset tiny --steps 100000 --batch 2 --seq 16 >"$tmp/int.log" 2>&1 &
pid=$!
sleep 2
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 0 ] && grep -q '"interrupted": true' "$tmp/int.log" && [ -f "$tmp/int/trainer_state.json" ]; then
  pass=$((pass + 1))
  steps=$(sed -nE 's/.*"step": ([0-9]+),.*/\1/p' "$tmp/int/trainer_state.json" | head -1)
  check "Ctrl-C reports no validation (null), not a loss of 0" grep -q '"val_loss": null' "$tmp/int.log"
  check "Ctrl-C names the checkpoint and the resume command" grep -q "moepp train --data $tmp/data --out $tmp/int --steps 100000 --resume" "$tmp/int.log"
  check "resume after Ctrl-C" "$moepp" train --data "$tmp/data" --out "$tmp/int" --steps $((steps + 3)) --batch 2 --seq 16 --resume
else
  fail=$((fail + 1)); echo "FAIL: Ctrl-C (rc $rc)"; cat "$tmp/int.log"
fi

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
