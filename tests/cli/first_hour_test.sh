#!/usr/bin/env bash
# What a new user meets first (issue 19): `moepp --version` names the version in
# CMakeLists.txt and the GEMM provider the build configured; `moepp tokenize` gives ids
# that `moepp logits` accepts and pieces that spell the text back; a wrong path is named for
# what it is (no such path, not a model folder, a model folder without a tokenizer).
# Usage: first_hour_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
moepp="$(cd "$1" && pwd)/moepp"  # absolute: some checks run in another folder
src="$2"
source "$(dirname "$0")/lib.sh"

# --version: the project's version and the configured provider, from their own sources.
version=$(sed -n 's/^project(moepp VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
provider=$(sed -n 's/^MOEPP_GEMM_PROVIDER:[A-Z]*=//p' "$1/CMakeCache.txt")
check "--version exits 0" "$moepp" --version
"$moepp" --version >"$tmp/version" 2>&1
check "--version names $version" grep -q "^moepp $version (commit " "$tmp/version"
[ -n "$provider" ] && check "--version names the provider $provider" grep -q "^GEMM provider: $provider\$" "$tmp/version"
check "tokenize --help" "$moepp" tokenize --help

for i in $(seq 1 400); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done > "$tmp/corpus.txt"
check "prepare" "$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 400
check "train" "$moepp" train --data "$tmp/data" --out "$tmp/run" --preset tiny --steps 2 --batch 2 --seq 16 --eval-batches 1

# --stop-after is reported as itself (not as a time limit), with the command that continues.
"$moepp" train --data "$tmp/data" --out "$tmp/part" --preset tiny --steps 4 --stop-after 1 --batch 2 --seq 16 --eval-batches 1 >"$tmp/part.out" 2>"$tmp/part.err"
check "--stop-after: stopped_after true" grep -q '"time_limited": false, "stopped_after": true' "$tmp/part.out"
check "--stop-after: a validation loss" grep -q '"val_loss": [0-9]' "$tmp/part.out"
check "--stop-after: the resume command" grep -q "moepp train --data $tmp/data --out $tmp/part --steps 4 --resume" "$tmp/part.err"

# compare: a folder without a training log shows n/a for train tok/s, never 0.
check "convert (no training log)" "$moepp" convert --in "$tmp/run" --out "$tmp/conv"
check "a run with steps past warm-up" "$moepp" train --data "$tmp/data" --out "$tmp/run12" --preset tiny --steps 12 --batch 2 --seq 16 --eval-batches 1
"$moepp" compare --run "$tmp/run12" --run "$tmp/conv" --data "$tmp/data" --batch 2 --seq 16 --max-batches 1 --prompt "" >"$tmp/cmp" 2>/dev/null
check "compare: n/a for the converted folder" grep -qE "^$tmp/conv .* n/a\$" "$tmp/cmp"
check "compare: a number for the trained run" grep -qE "^$tmp/run12 .* [0-9]+\$" "$tmp/cmp"

text="the lazy dog jumps over Line 42"
"$moepp" tokenize -m "$tmp/run" -p "$text" >"$tmp/tok" 2>/dev/null
"$moepp" tokenize -m "$tmp/run" -p "$text" --no-bos --ids-only >"$tmp/tok_nobos" 2>/dev/null
ids=$(head -n 1 "$tmp/tok")
check "tokenize puts BOS (id 1) first" test "${ids%%,*}" = 1
check "--no-bos drops exactly the BOS" test "1,$(cat "$tmp/tok_nobos")" = "$ids"
check "one line per id" test "$(tail -n +2 "$tmp/tok" | wc -l)" = "$(echo "$ids" | tr ',' '\n' | wc -l)"
check "the lines list the ids in order" test "$(tail -n +2 "$tmp/tok" | cut -f2 | paste -sd,)" = "$ids"
# The pieces after BOS spell the text: U+2581 stands for a space, and SentencePiece adds one in front.
spelled=$(tail -n +3 "$tmp/tok" | cut -f3 | tr -d '\n' | sed 's/\xe2\x96\x81/ /g')
check "the pieces spell the text" test "$spelled" = " $text"
printf '%s' "$text" >"$tmp/text.txt"
"$moepp" tokenize -m "$tmp/run" -f "$tmp/text.txt" --ids-only >"$tmp/tok_file" 2>/dev/null
check "--file gives the ids of --text" test "$(cat "$tmp/tok_file")" = "$ids"
check "tokenize with the tokenizer file itself" "$moepp" tokenize -m "$tmp/run/tokenizer.model" -p "$text"
check "tokenize with a data folder" "$moepp" tokenize -m "$tmp/data" -p "$text"
check "logits takes tokenize's ids" "$moepp" logits --model "$tmp/run" --ids "$ids" --out "$tmp/logits.safetensors"

# logits and grad take text: the same logits as the ids tokenize gives.
check "logits --text" "$moepp" logits --model "$tmp/run" --text "$text" --out "$tmp/logits_text.safetensors"
check "logits --text equals logits --ids of tokenize" cmp "$tmp/logits.safetensors" "$tmp/logits_text.safetensors"
check "logits --file" "$moepp" logits --model "$tmp/run" --file "$tmp/text.txt" --out "$tmp/logits_file.safetensors"
check "logits --file equals --ids" cmp "$tmp/logits.safetensors" "$tmp/logits_file.safetensors"
check_error "logits: --ids and --text together" "excludes" "$moepp" logits --model "$tmp/run" --ids 1,2 --text x --out "$tmp/x.st"
check_error "logits: no sequence" "give the sequence as --ids, --text or --file" "$moepp" logits --model "$tmp/run" --out "$tmp/x.st"
# grad prints the loss it writes: the printed JSON's loss is the file's "loss" tensor.
"$moepp" grad --model "$tmp/run" --text "$text" --out "$tmp/grad.safetensors" >"$tmp/grad.json" 2>/dev/null
printed=$(sed -n 's/.*"loss":\([-0-9.e+]*\).*/\1/p' "$tmp/grad.json")
written=$(python3 - "$tmp/grad.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h["loss"]["data_offsets"]
print(repr(struct.unpack("<f", b[8 + n + s:8 + n + e])[0]))
PY
)
check "grad prints a loss" test -n "$printed"
check "grad's printed loss is the written one (f32)" python3 -c "import sys; a, b = float('$printed'), float('$written'); sys.exit(abs(a - b) > 1e-6 * max(1.0, abs(b)))"
# info names the folder's own model_type, and how moepp runs it.
"$moepp" info --model "$src/tests/fixtures/hf/mixtral" >"$tmp/info.json" 2>&1
check "info on a Mixtral folder says mixtral" grep -q '"model_type": "mixtral"' "$tmp/info.json"
check "info says it runs as a vanilla MoE" grep -q '"runs_as": "MoE++ (vanilla MoE' "$tmp/info.json"
"$moepp" info --model "$tmp/run" >"$tmp/info2.json" 2>&1
check "info on moepp's own folder says MoE++" grep -q '"model_type": "MoE++"' "$tmp/info2.json"
check "info: an f32 run stores float32" grep -q '"weights": "float32"' "$tmp/info2.json"
# A q8_0 folder says so in config.json (Hugging Face's quantization_config key) and in info.
check "convert --dtype q8_0" "$moepp" convert --in "$tmp/run" --out "$tmp/q8" --dtype q8_0
check "q8_0 config.json names its quantization" grep -q '"quant_method": "moepp_q8_0"' "$tmp/q8/config.json"
"$moepp" info --model "$tmp/q8" >"$tmp/info3.json" 2>&1
check "info on a q8_0 folder says moepp_q8_0" grep -q '"weights": "moepp_q8_0"' "$tmp/info3.json"
check "the q8_0 folder loads (eval)" "$moepp" eval --model "$tmp/q8" --data "$tmp/data" --batch 2 --seq 16 --max-batches 1
check "convert --dtype q4" "$moepp" convert --in "$tmp/run" --out "$tmp/q4" --dtype q4
"$moepp" info --model "$tmp/q4" >"$tmp/info4.json" 2>&1
check "info on a q4 folder says moepp_q4" grep -q '"weights": "moepp_q4"' "$tmp/info4.json"
check "the q4 folder generates as q4" "$moepp" generate --model "$tmp/q4" --prompt "Line 3" -n 5 --dtype q4

# generate: llama-cli's short options; a stop string ends the text before it; -c bounds the
# context with a notice; a timing line on stderr.
prompt="the lazy dog"
"$moepp" generate -m "$tmp/run" -p "$prompt" -n 24 --temp 0 -q >"$tmp/greedy" 2>/dev/null
greedy=$(cat "$tmp/greedy")
cont=${greedy#"$prompt"}
check "greedy continues the prompt" test "$greedy" != "$prompt"
# --mmap: the same weights used where they lie in the file give the same greedy text.
"$moepp" generate -m "$tmp/run" -p "$prompt" -n 24 --temp 0 -q --mmap >"$tmp/greedy_mmap" 2>/dev/null
check "--mmap generates the same greedy text" test "$(cat "$tmp/greedy_mmap")" = "$greedy"
stop=${cont:4:3}
if [ ${#stop} -eq 3 ]; then
  want="$prompt${cont%%"$stop"*}"
  "$moepp" generate -m "$tmp/run" -p "$prompt" -n 24 --temp 0 --stop "$stop" >"$tmp/stopped" 2>"$tmp/stopped.err"
  check "--stop ends before the stop string" test "$(cat "$tmp/stopped")" = "$want"
  check "--stop is reported" grep -q "stopped: stop string" "$tmp/stopped.err"
else
  fail=$((fail + 1)); echo "FAIL: the greedy continuation is too short for a stop string: '$cont'"
fi
prompt_tokens=$("$moepp" tokenize -m "$tmp/run" -p "$prompt" --ids-only 2>/dev/null | tr ',' '\n' | wc -l)
"$moepp" generate -m "$tmp/run" -p "$prompt" -n 50 --temp 0 -c $((prompt_tokens + 3)) >/dev/null 2>"$tmp/ctx.err"
check "-c: the notice says the context is full after 3 tokens" grep -q "context of $((prompt_tokens + 3)) positions is full after 3 tokens" "$tmp/ctx.err"
check "the timing line counts the prompt" grep -q "^generate: prompt $prompt_tokens tokens at .* generated 3 tokens at .*FFN experts per token" "$tmp/ctx.err"
check_error "-c beyond the model" "outside what the model holds" "$moepp" generate -m "$tmp/run" -p "$prompt" -c 100000
check "--repeat-penalty runs" "$moepp" generate -m "$tmp/run" -p "$prompt" -n 8 --repeat-penalty 1.3 -s 3 -q
check_error "generate: no prompt" "give a prompt" "$moepp" generate -m "$tmp/run"

check_error "tokenize: no such path" "no such folder or file" "$moepp" tokenize -m "$tmp/nothing" -p "x"
mkdir -p "$tmp/empty"
check_error "tokenize: not a model folder" "not a model folder (no config.json" "$moepp" tokenize -m "$tmp/empty" -p "x"
mkdir -p "$tmp/no_tok" && cp "$tmp/run/config.json" "$tmp/no_tok/"
check_error "tokenize: a model folder without its tokenizer" "has no tokenizer.model" "$moepp" tokenize -m "$tmp/no_tok" -p "x"
check_error "tokenize: no text" "give --text or --file" "$moepp" tokenize -m "$tmp/run"
check_error "generate: no such model folder" "no such folder or file" "$moepp" generate --model "$tmp/nothing" --prompt "x"
check_error "generate: not a model folder" "not a model folder" "$moepp" generate --model "$tmp/empty" --prompt "x"

# analyze writes a new folder in the working directory by default, never into the model,
# and a second analysis does not overwrite the first.
(cd "$tmp" && "$moepp" analyze --model run/ --text corpus.txt --seq 16 --max-tokens 200 --no-plots) >"$tmp/an.out" 2>&1 || cat "$tmp/an.out"
check "analyze: default folder analysis-run" test -s "$tmp/analysis-run/analysis.json"
check "analyze: nothing written into the model" test ! -e "$tmp/run/analysis"
(cd "$tmp" && "$moepp" analyze --model run --text corpus.txt --seq 16 --max-tokens 200 --no-plots >/dev/null 2>&1)
check "analyze: a second run goes to analysis-run-2" test -s "$tmp/analysis-run-2/analysis.json"

# Data made with another tokenizer is refused by eval, compare and train --resume; so is a
# data folder whose tokenizer.model was swapped after prepare.
for i in $(seq 1 300); do echo "Other text $i: a different corpus with other words, colours and numbers $((i % 13))."; done > "$tmp/other.txt"
check "prepare with another tokenizer" "$moepp" prepare --input "$tmp/other.txt" --out "$tmp/other" --vocab-size 300
check "data.json records the tokenizer" grep -q '"digest": "[0-9a-f]\{16\}"' "$tmp/data/data.json"
check "eval on the run's own data" "$moepp" eval --model "$tmp/run" --data "$tmp/data" --batch 2 --seq 16 --max-batches 1
check_error "eval: data of another tokenizer" "is not the tokenizer $tmp/other was prepared with" "$moepp" eval --model "$tmp/run" --data "$tmp/other" --batch 2 --seq 16
check_error "compare: data of another tokenizer" "is not the tokenizer $tmp/other was prepared with" "$moepp" compare --run "$tmp/run" --data "$tmp/other" --batch 2 --seq 16 --prompt ""
check_error "train --resume: data of another tokenizer" "is not the tokenizer $tmp/other was prepared with" "$moepp" train --data "$tmp/other" --out "$tmp/part" --steps 4 --resume
cp -r "$tmp/data" "$tmp/swapped" && cp "$tmp/other/tokenizer.model" "$tmp/swapped/tokenizer.model"
check_error "train: a data folder whose tokenizer was swapped" "the shards no longer match it" "$moepp" train --data "$tmp/swapped" --out "$tmp/swapped_run" --preset tiny --steps 2 --batch 2 --seq 16
check "the refused train left no run folder behind" test ! -e "$tmp/swapped_run/trainer_state.json"

echo "first-hour checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
