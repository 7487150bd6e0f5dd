#!/usr/bin/env bash
# bench/serve: `moepp serve` under 1, 4 and 16 concurrent streaming clients (256-token
# prompts, 128 generated tokens each, 2 requests per client), on the Mixtral-shaped random
# model and its MoE++ twin (decode_bench's shapes and weights) with q8_0 weights: aggregate
# generated tokens/s, time to first token and inter-token latency (p50/p99), and each
# concurrency's throughput over one client's. Needs a build with the benchmarks
# (build/bench/decode_bench: bench/serve_common.sh makes the folders).
# Usage: bash bench/serve_bench.sh [WORK_DIR] (default work/serve-bench)
#        MOEPP=path/to/moepp bash bench/serve_bench.sh ... serves with another build (an older
#        commit's, to compare two builds in one sitting; the folders are made by this one).
#        SERVE_ARGS="--kv-dtype f32" bash bench/serve_bench.sh ... passes more flags to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/serve-bench}
moepp=${MOEPP:-build/moepp}
# shellcheck source=bench/serve_common.sh
source bench/serve_common.sh
serve_folders "$work"
printf '%-8s %8s | %12s %8s | %9s %9s | %9s %9s\n' model clients "gen tok/s" "x 1 cl." "TTFT p50" "TTFT p99" "ITL p50" "ITL p99"
for m in vanilla moepp; do
  # shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
  start_server "$moepp" "$work/q8/$m" "$work/serve-$m.log" ${SERVE_ARGS:-}
  python3 bench/serve_load.py --port "$port" --clients 1 --requests 1 --prompt 32 --tokens 8 --seed 0 >/dev/null  # warm-up
  one=""
  for c in 1 4 16; do
    # Each load's prompts its own (--seed): none begins like an earlier one, which the
    # server's prompt cache would take instead of prefilling it (docs/serve.md).
    r=$(python3 bench/serve_load.py --port "$port" --clients $c --seed $c)
    echo "$r" >>"$work/results.jsonl"
    tps=$(echo "$r" | sed -nE 's/.*"tokens_per_s": ([0-9.]+).*/\1/p')
    [ -z "$one" ] && one=$tps
    echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); print('%-8s %8d | %12.1f %7.2fx | %8.2fs %8.2fs | %7.0fms %7.0fms' % ('$m', r['clients'], r['tokens_per_s'], r['tokens_per_s'] / $one, r['ttft_p50_s'], r['ttft_p99_s'], 1e3 * r['itl_p50_s'], 1e3 * r['itl_p99_s']))"
  done
  metrics=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())")
  echo "$metrics" | grep -E '^moepp_ffn_experts_per_token_mean|^moepp_decoder_steps_total|^moepp_decoder_step_rows_total' | sed "s/^/  $m: /"
  kill -TERM $server; wait $server
done
