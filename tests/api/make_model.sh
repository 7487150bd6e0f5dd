#!/usr/bin/env bash
# The model folder the public-API tests run on (the CTest fixture api_model): a tiny MoE++
# trained for a few steps by the `moepp` CLI on generated text, with its tokenizer.model.
# Usage: make_model.sh MOEPP_CLI OUT_DIR
set -euo pipefail
moepp="$1"
out="$2"
rm -rf "$out"
mkdir -p "$out"
for i in $(seq 1 400); do echo "Line $i: the quick brown fox jumps over the lazy dog number $((i % 17))."; done >"$out/corpus.txt"
"$moepp" prepare --input "$out/corpus.txt" --out "$out/data" --vocab-size 400 >"$out/prepare.log" 2>&1
"$moepp" train --data "$out/data" --out "$out/model" --preset tiny --steps 8 --batch 2 --seq 16 --eval-batches 1 \
  >"$out/train.log" 2>&1
# A folder whose config.json is not JSON: loading it must fail with a message.
mkdir -p "$out/corrupt"
cp "$out/model/model.safetensors" "$out/corrupt/"
printf '{"vocab_size": 400, "hidden_size": ' >"$out/corrupt/config.json"
echo "api model: $out/model"
