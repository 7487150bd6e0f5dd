#!/usr/bin/env bash
# Hostile command-line values (issue: nothing crashes): each must fail with a one-line
# "error: ..." naming the real cause and a non-zero exit, never a signal.
# Usage: hostile_values_test.sh BUILD_DIR
set -uo pipefail
moepp="$1/moepp"
py=/usr/bin/python3
[ -x "$py" ] || py=python3
source "$(dirname "$0")/lib.sh"
check_true() {  # check_true NAME COMMAND...: a plain test of the result of earlier steps
  if "${@:2}"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}

# poke FILE TENSOR FIRST COUNT VALUE: overwrites COUNT f32 elements of a safetensors tensor
# from element FIRST with VALUE (a float, "nan" or "inf"); standard library only.
poke() {
  "$py" - "$@" <<'EOF'
import json, struct, sys
path, name, first, count, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    t = json.loads(f.read(n))[name]
    assert t["dtype"] == "F32"
    f.seek(8 + n + t["data_offsets"][0] + 4 * first)
    f.write(struct.pack("<%df" % count, *([value] * count)))
EOF
}

# A model to run against, as in cli_test.sh.
for i in $(seq 1 400); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done > "$tmp/corpus.txt"
if ! { "$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 400 &&
  "$moepp" train --data "$tmp/data" --out "$tmp/run" --preset tiny --steps 2 --batch 2 --seq 16 --eval-batches 1; } \
  >"$tmp/setup.log" 2>&1; then
  cat "$tmp/setup.log"
  echo "cli-hostile: 0 passed, 1 failed (setup)"
  exit 1
fi
run="$tmp/run"
data="$tmp/data"
ctx=$(sed -nE 's/.*"max_position_embeddings": ([0-9]+).*/\1/p' "$run/config.json")
hidden=$(sed -nE 's/.*"hidden_size": ([0-9]+).*/\1/p' "$run/config.json")

# --- 1. sizes, counts, rates: zero, negative, NaN, Inf are refused by name.
check_error "eval --seq 0" "eval: --seq: must be a positive number, got '0'" "$moepp" eval --model "$run" --data "$data" --seq 0
check_error "eval --seq -5" "--seq: must be a positive number, got '-5'" "$moepp" eval --model "$run" --data "$data" --seq -5
check_error "eval --seq nan" "--seq: must be a positive number, got 'nan'" "$moepp" eval --model "$run" --data "$data" --seq nan
check_error "eval --batch 0" "eval: --batch: must be a positive number, got '0'" "$moepp" eval --model "$run" --data "$data" --batch 0
check_error "eval --max-batches -1" "eval: --max-batches: must be 0 or more, got '-1'" \
  "$moepp" eval --model "$run" --data "$data" --seq 16 --batch 2 --max-batches -1
check_error "eval --seq past the context" "eval: --seq $((ctx + 1)) is longer than the context of $run (max_position_embeddings $ctx)" \
  "$moepp" eval --model "$run" --data "$data" --seq $((ctx + 1))
check_error "compare --seq 0" "compare: --seq: must be a positive number, got '0'" "$moepp" compare --run "$run" --data "$data" --seq 0
check_error "compare --seq past the context" "compare: --seq $((ctx + 1)) is longer than the context of $run" \
  "$moepp" compare --run "$run" --data "$data" --seq $((ctx + 1))
check_error "compare --batch -2" "compare: --batch: must be a positive number, got '-2'" \
  "$moepp" compare --run "$run" --data "$data" --batch -2
check_error "compare --max-batches -1" "compare: --max-batches: must be 0 or more, got '-1'" \
  "$moepp" compare --run "$run" --data "$data" --max-batches -1
check_error "compare --sample-tokens -1" "compare: --sample-tokens: must be 0 or more, got '-1'" \
  "$moepp" compare --run "$run" --data "$data" --sample-tokens -1
check_error "generate -n -1" "generate: --max-tokens: must be 0 or more, got '-1'" "$moepp" generate --model "$run" --prompt "Line 3" -n -1
check_error "generate --temperature nan" "generate: --temperature: must be 0 or more, got 'nan'" \
  "$moepp" generate --model "$run" --prompt "Line 3" --temperature nan
check_error "generate --temperature -1" "--temperature: must be 0 or more, got '-1'" \
  "$moepp" generate --model "$run" --prompt "Line 3" --temperature -1
check_error "generate --temperature inf" "--temperature: must be 0 or more, got 'inf'" \
  "$moepp" generate --model "$run" --prompt "Line 3" --temperature inf
check_error "generate --top-p 0" "generate: --top-p: must be in (0, 1\], got '0'" "$moepp" generate --model "$run" --prompt "Line 3" --top-p 0
check_error "generate --top-p nan" "--top-p: must be in (0, 1\], got 'nan'" "$moepp" generate --model "$run" --prompt "Line 3" --top-p nan
check_error "generate --top-p 1.5" "--top-p: must be in (0, 1\], got '1.5'" "$moepp" generate --model "$run" --prompt "Line 3" --top-p 1.5
check_error "generate --top-k -1" "generate: --top-k: must be 0 or more, got '-1'" "$moepp" generate --model "$run" --prompt "Line 3" --top-k -1
for opt in --seq --batch; do
  check_error "analyze $opt 0" "analyze: $opt: must be a positive number, got '0'" \
    "$moepp" analyze --model "$run" --text "$tmp/corpus.txt" --no-plots --out "$tmp/an" $opt 0
done
for opt in --max-tokens --min-count --list --sample-tokens; do
  check_error "analyze $opt -1" "analyze: $opt: must be 0 or more, got '-1'" \
    "$moepp" analyze --model "$run" --text "$tmp/corpus.txt" --no-plots --out "$tmp/an" $opt -1
done
# A plan that trains in a second, should a refused option ever be let through.
echo '{"base": {"preset": "tiny", "steps": 1, "batch": 2, "seq": 16, "eval_batches": 1}, "runs": [{"name": "a"}]}' \
  > "$tmp/plan1.json"
check_error "experiment --eval-batches -1" "experiment: --eval-batches: must be 0 or more, got '-1'" \
  "$moepp" experiment --plan "$tmp/plan1.json" --data "$data" --out "$tmp/exp0" --eval-batches -1
check_error "experiment --retime -1" "experiment: --retime: must be 0 or more, got '-1'" \
  "$moepp" experiment --plan "$tmp/plan1.json" --data "$data" --out "$tmp/exp0" --retime -1
check_true "nothing written by a refused experiment" test ! -e "$tmp/exp0"
# --threads, on every command that takes it: negative, and so many that threads could not start.
threads_cmds=(
  "train --data $data --out $tmp/never --preset tiny --steps 1 --batch 2 --seq 16 --eval-batches 1"
  "eval --model $run --data $data"
  "generate --model $run --prompt x"
  "logits --model $run --ids 1 --out $tmp/never.st"
  "grad --model $run --ids 1,2 --out $tmp/never.st"
  "compare --run $run --data $data"
  "experiment --plan $tmp/plan1.json --data $data --out $tmp/never"
  "analyze --model $run --text $tmp/corpus.txt"
)
for c in "${threads_cmds[@]}"; do
  name=${c%% *}
  # shellcheck disable=SC2086  # word splitting of the command line is intended
  check_error "$name --threads -1" "$name: --threads: must be from 0 (all cores) to [0-9]*, got '-1'" "$moepp" $c --threads -1
done
check_error "--threads 1000000" "--threads: must be from 0 (all cores) to [0-9]*, got '1000000'" \
  "$moepp" logits --model "$run" --ids 1 --out "$tmp/never.st" --threads 1000000
check_true "nothing written by refused commands" test ! -e "$tmp/never" -a ! -e "$tmp/never.st"
# The limits are not off by one: the smallest accepted values still work.
check "eval --batch 1 --seq 1 --max-batches 0" "$moepp" eval --model "$run" --data "$data" --batch 1 --seq 1 --max-batches 0
check "generate -n 0 --temperature 0 --top-p 1 --top-k 0" \
  "$moepp" generate --model "$run" --prompt "Line 3" -n 0 --temperature 0 --top-p 1 --top-k 0 --threads 1
check "analyze --seq 1 --batch 1 --max-tokens 0 --list 0" \
  "$moepp" analyze --model "$run" --text "$tmp/corpus.txt" --no-plots --out "$tmp/an" --seq 1 --batch 1 --max-tokens 40 --list 0

# --- 2. non-finite weights or activations are an error, not text or a file of NaN.
# nan: a NaN in the final norm, so every logit is NaN. huge: finite weights whose products
# overflow (final norm 1e30 and lm_head row 5 all 1e30), so the logits of token 5 are not finite.
cp -r "$run" "$tmp/nan"
poke "$tmp/nan/model.safetensors" model.norm.weight 0 1 nan
cp -r "$run" "$tmp/huge"
poke "$tmp/huge/model.safetensors" model.norm.weight 0 "$hidden" 1e30
poke "$tmp/huge/model.safetensors" lm_head.weight $((5 * hidden)) "$hidden" 1e30
# A loader that refuses NaN weights outright is as good as a refused logit.
check_error "generate NaN weights" "\(non-finite\|NaN\|nan\)" "$moepp" generate --model "$tmp/nan" --prompt "Line 3" -n 5
check_error "logits NaN weights" "\(non-finite\|NaN\|nan\)" "$moepp" logits --model "$tmp/nan" --ids 1,5,9 --out "$tmp/nan.st"
check_error "generate overflowing logits" "generate: non-finite logits at step 0 (position [0-9]*): the logit of token 5 is" \
  "$moepp" generate --model "$tmp/huge" --prompt "Line 3" -n 5
check_error "generate greedy overflowing logits" "generate: non-finite logits at step 0" \
  "$moepp" generate --model "$tmp/huge" --prompt "Line 3" -n 5 --temperature 0
# q8_0 and q4 keep a block's scale as f16 (at most 65504): packing refuses weights of 1e30,
# naming the tensor and its row, before any logit is computed.
check_error "generate q8_0 weights beyond f16 scales" "lm_head.weight: pack: q8_0 stores a block's scale as f16, .*row 5, columns 0-" \
  "$moepp" generate --model "$tmp/huge" --prompt "Line 3" -n 5 --dtype q8_0
check_error "generate q4 weights beyond f16 scales" "lm_head.weight: pack: q4 stores a block's scale as f16, .*row 5, columns 0-" \
  "$moepp" generate --model "$tmp/huge" --prompt "Line 3" -n 5 --dtype q4
check_error "logits overflowing" "logits: non-finite logits at position 0: the logit of token 5 is" \
  "$moepp" logits --model "$tmp/huge" --ids 1,5,9 --out "$tmp/huge.st"
check_error "logits bf16 overflowing" "logits: non-finite logits at position 0: the logit of token 5 is" \
  "$moepp" logits --model "$tmp/huge" --ids 1,5,9 --out "$tmp/huge.st" --dtype bf16
check_true "no logits file of NaN written" test ! -e "$tmp/nan.st" -a ! -e "$tmp/huge.st"
check_error "grad overflowing" "grad: the loss is" "$moepp" grad --model "$tmp/huge" --ids 1,5,9 --out "$tmp/huge.st"
check_true "no gradient file of NaN written" test ! -e "$tmp/huge.st"
check_error "eval overflowing" "eval: .*the loss over [0-9]* tokens of val.bin is" \
  "$moepp" eval --model "$tmp/huge" --data "$data" --seq 16 --batch 2 --max-batches 1
check_error "compare overflowing" "compare: .*the validation loss is" \
  "$moepp" compare --run "$tmp/huge" --data "$data" --seq 16 --batch 2 --max-batches 1

# --- 3. a sequence longer than the context: f32, bf16 and q8_0 refuse it in the same words.
seq -s, 1 $((ctx + 1)) > "$tmp/long.txt"
seq -s, 1 "$ctx" > "$tmp/full.txt"
for dtype in f32 bf16 q8_0; do
  check_error "logits $dtype past the context" "model: sequence of $((ctx + 1)) tokens exceeds max_position_embeddings $ctx" \
    "$moepp" logits --model "$run" --ids @"$tmp/long.txt" --out "$tmp/long.st" --dtype $dtype
  check "logits $dtype at the context" "$moepp" logits --model "$run" --ids @"$tmp/full.txt" --out "$tmp/full.st" --dtype $dtype
done
check_error "grad past the context" "model: sequence of $((ctx + 1)) tokens exceeds max_position_embeddings $ctx" \
  "$moepp" grad --model "$run" --ids @"$tmp/long.txt" --out "$tmp/long.st"
check_true "no file written past the context" test ! -e "$tmp/long.st"

# --- 4. convert never writes into the folder it reads, under any spelling of it.
sum_before=$(cat "$run"/* 2>/dev/null | cksum)
ln -s "$run" "$tmp/run-link"
for out in "$run" "$run/" "$run/." "$tmp/./run" "$run/new/.." "$tmp/run-link" "$tmp/run-link/"; do
  check_error "convert --out $out" "convert: --out .* is the input folder" "$moepp" convert --in "$run" --out "$out"
  check_error "convert q8_0 --out $out" "convert: --out .* is the input folder" "$moepp" convert --in "$run" --out "$out" --dtype q8_0
done
check_error "convert --in via a link" "convert: --out .* is the input folder" "$moepp" convert --in "$tmp/run-link" --out "$run"
check_true "the source folder is untouched" test "$(cat "$run"/* 2>/dev/null | cksum)" = "$sum_before" -a ! -e "$run/new"
check "convert into a new folder" "$moepp" convert --in "$run" --out "$tmp/converted" --dtype bf16
check "convert into a new folder inside the source" "$moepp" convert --in "$run" --out "$run/sub" --dtype q8_0

# --- 5. analyze --text takes UTF-8 text only, and says where it is not.
an() { "$moepp" analyze --model "$run" --text "$1" --no-plots --out "$tmp/an" --seq 16; }
printf 'Line 1: the quick\0brown fox\n' > "$tmp/nul.txt"
check_error "analyze NUL byte" "analyze: --text $tmp/nul.txt is not UTF-8 text: a NUL byte (0x00) at byte offset 17" an "$tmp/nul.txt"
printf 'Line 1: the \xffquick\n' > "$tmp/ff.txt"
check_error "analyze 0xFF" "$tmp/ff.txt is not UTF-8 text: .*(0xFF) at byte offset 12" an "$tmp/ff.txt"
printf 'Line 1: caf\xc3' > "$tmp/cut.txt"
check_error "analyze cut character" "$tmp/cut.txt is not UTF-8 text: .*(0xC3) at byte offset 11" an "$tmp/cut.txt"
printf 'Line 1: \xc0\xaf overlong\n' > "$tmp/overlong.txt"
check_error "analyze overlong form" "is not UTF-8 text: .*(0xC0) at byte offset 8" an "$tmp/overlong.txt"
printf 'Line 1: \xed\xa0\x80 surrogate\n' > "$tmp/surrogate.txt"
check_error "analyze surrogate" "is not UTF-8 text: .*(0xED) at byte offset 8" an "$tmp/surrogate.txt"
check_error "analyze a binary" "is not UTF-8 text" an "$moepp"
printf 'Line 1: caf\xc3\xa9, na\xc3\xafve \xe2\x9c\x93 \xf0\x9d\x84\x9e the quick brown fox.\n' > "$tmp/utf8.txt"
check "analyze multi-byte UTF-8" an "$tmp/utf8.txt"

# --- 6. experiment: run names must be unique (and plain), checked before anything trains.
cat > "$tmp/dup.json" <<'EOF'
{"name": "dup", "base": {"preset": "tiny", "steps": 1, "batch": 2, "seq": 16, "eval_batches": 1},
 "runs": [{"name": "a", "tau": 0.5}, {"name": "b", "vanilla": true}, {"name": "a", "tau": 0.75}]}
EOF
check_error "experiment duplicate run names" "dup.json: runs 1 and 3 are both named \"a\"" \
  "$moepp" experiment --plan "$tmp/dup.json" --data "$data" --out "$tmp/exp-dup"
check_true "nothing trained for a plan with duplicate names" test ! -e "$tmp/exp-dup"
mkdir -p "$tmp/exp-seen" && cp "$tmp/dup.json" "$tmp/exp-seen/plan.json"
check_error "analyze --experiment with duplicate run names" "exp-seen/plan.json: runs 1 and 3 are both named \"a\"" \
  "$moepp" analyze --experiment "$tmp/exp-seen" --no-plots
echo '{"runs": [{"name": ".."}]}' > "$tmp/dotdot.json"
check_error "experiment run named .." "run 1 has the name \"..\"; a run name must be a plain folder name" \
  "$moepp" experiment --plan "$tmp/dotdot.json" --data "$data" --out "$tmp/exp-dd"
echo '{"runs": [{"name": 7}]}' > "$tmp/numname.json"
check_error "experiment run name not a string" "run 1 needs a \"name\" string" \
  "$moepp" experiment --plan "$tmp/numname.json" --data "$data" --out "$tmp/exp-nn"
# A run with a nonsense size fails by name; the experiment reports it and carries on.
echo '{"base": {"preset": "tiny"}, "runs": [{"name": "z", "seq": 0}, {"name": "w", "steps": "many"}]}' > "$tmp/zero.json"
check "experiment with bad run sizes" "$moepp" experiment --plan "$tmp/zero.json" --data "$data" --out "$tmp/exp-z"
check_true "a zero seq is reported by name" grep -q 'z: plan: run z: "seq" must be positive, got 0' "$tmp/out"
check_true "a mistyped field is reported by name" grep -q 'w: plan: run w: .*type must be number' "$tmp/out"

echo "cli-hostile: $pass passed, $fail failed"
[ $fail -eq 0 ]
