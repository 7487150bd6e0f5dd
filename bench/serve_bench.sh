#!/usr/bin/env bash
# bench/serve: `moepp serve` under 1, 4 and 16 concurrent streaming clients (256-token
# prompts, 128 generated tokens each, 2 requests per client), on the Mixtral-shaped random
# model and its MoE++ twin (decode_bench's shapes and weights) with q8_0 weights: aggregate
# generated tokens/s, time to first token and inter-token latency (p50/p99), and each
# concurrency's throughput over one client's. Needs a build with the benchmarks
# (build/bench/decode_bench) and the KJV corpus (make run, or scripts/get-corpus.sh) for an
# 8192-piece tokenizer the random models decode with.
# Usage: bash bench/serve_bench.sh [WORK_DIR] (default work/serve-bench)
#        MOEPP=path/to/moepp bash bench/serve_bench.sh ... serves with another build (an older
#        commit's, to compare two builds in one sitting; the folders are made by this one).
#        SERVE_ARGS="--kv-dtype f32" bash bench/serve_bench.sh ... passes more flags to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/serve-bench}
moepp=${MOEPP:-build/moepp}
mkdir -p "$work"
[ -s work/corpus/kjv.txt ] || bash scripts/get-corpus.sh work/corpus
[ -s "$work/tok/tokenizer.model" ] || build/moepp prepare --input work/corpus/kjv.txt --out "$work/tok" --vocab-size 8192 >/dev/null
if [ ! -s "$work/q8/moepp/model.safetensors" ]; then
  build/bench/decode_bench --write-folders "$work/f32" --tokenizer "$work/tok/tokenizer.model"
  for m in vanilla moepp; do build/moepp convert --in "$work/f32/$m" --out "$work/q8/$m" --dtype q8_0; done
  rm -rf "$work/f32"
fi
printf '%-8s %8s | %12s %8s | %9s %9s | %9s %9s\n' model clients "gen tok/s" "x 1 cl." "TTFT p50" "TTFT p99" "ITL p50" "ITL p99"
for m in vanilla moepp; do
  # The server pins its decoder's OpenMP team itself, one thread a CPU (serve/scheduler.cpp).
  # No OMP_PROC_BIND: with it the runtime binds the main thread to the first CPU, and every
  # request thread started from it inherits that one CPU.
  # shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
  $moepp serve -m "$work/q8/$m" --dtype q8_0 --port 0 --max-seqs 16 --threads 2 ${SERVE_ARGS:-} \
    2>"$work/serve-$m.log" &
  server=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(sed -nE 's/.*on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' "$work/serve-$m.log"); [ -n "$port" ] && break; sleep 0.2
  done
  python3 bench/serve_load.py --port "$port" --clients 1 --requests 1 --prompt 32 --tokens 8 >/dev/null  # warm-up
  one=""
  for c in 1 4 16; do
    r=$(python3 bench/serve_load.py --port "$port" --clients $c)
    echo "$r" >>"$work/results.jsonl"
    tps=$(echo "$r" | sed -nE 's/.*"tokens_per_s": ([0-9.]+).*/\1/p')
    [ -z "$one" ] && one=$tps
    echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); print('%-8s %8d | %12.1f %7.2fx | %8.2fs %8.2fs | %7.0fms %7.0fms' % ('$m', r['clients'], r['tokens_per_s'], r['tokens_per_s'] / $one, r['ttft_p50_s'], r['ttft_p99_s'], 1e3 * r['itl_p50_s'], 1e3 * r['itl_p99_s']))"
  done
  metrics=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())")
  echo "$metrics" | grep -E '^moepp_ffn_experts_per_token_mean|^moepp_decoder_steps_total|^moepp_decoder_step_rows_total' | sed "s/^/  $m: /"
  kill -TERM $server; wait $server
done
