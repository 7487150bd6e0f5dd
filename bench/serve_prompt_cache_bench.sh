#!/usr/bin/env bash
# bench/serve_prompt_cache: the server's prompt cache, on the loads that begin prompts alike,
# with it and without, alternating on one server per model (the q8_0 folders of
# bench/serve_bench.sh):
# - Chats: C concurrent clients (1 and 4) each hold a conversation of 4 turns on
#   /v1/chat/completions (a 100-word system message, 40-word user messages, 64-token greedy
#   replies), every request resending the whole conversation. Prints the time to first
#   token by turn (medians over the clients), the prompt tokens by turn, the share of
#   prompt tokens the cache supplied, and generated tokens/s over the load's wall time.
# - Scoring: C concurrent clients (1 and 4) each score 4 random 256-token contexts with 4
#   random 16-token continuations each (echo + logprobs, as evaluation harnesses score
#   multiple-choice questions), one prompt a request; and one client sending them 4 a
#   request (a context's 4 continuations together, as lm-evaluation-harness's
#   local-completions sends batch_size 4). Prints scored prompts/s, scored tokens/s, request
#   latency p50 and the share of prompt tokens the cache supplied.
# Each load runs with the cache ("cache_prompt": true, the server's default) and then
# without (false: every prompt prefilled whole) on the same prompts; each pair has prompts
# of its own (the server keeps caches across loads).
# Usage: bash bench/serve_prompt_cache_bench.sh [WORK_DIR] [ROUNDS] (default work/serve-bench, 2)
#        MOEPP=path/to/moepp ... serves with another build.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/serve-bench}
rounds=${2:-2}
moepp=${MOEPP:-build/moepp}
# shellcheck source=bench/serve_common.sh
source bench/serve_common.sh
serve_folders "$work"
printf '%-8s %3s %-6s | %-31s | %-23s | %7s | %9s\n' model cl. cache "TTFT by turn (s)" "prompt tokens by turn" "cached" "gen tok/s"
for m in vanilla moepp; do
  start_server "$moepp" "$work/q8/$m" "$work/serve-chat-$m.log"
  python3 bench/serve_load.py --port "$port" --clients 1 --requests 1 --prompt 32 --tokens 8 --seed 0 >/dev/null  # warm-up
  for round in $(seq 1 "$rounds"); do
    for c in 1 4; do
      for cache in on off; do
        flag=""
        [ $cache = off ] && flag=--no-cache-prompt
        # shellcheck disable=SC2086  # flag is empty or one flag
        r=$(python3 bench/serve_load.py --port "$port" --clients $c --chat-turns 4 --system 100 --words 40 --tokens 64 \
          --seed $((10 * round + c)) $flag)
        echo "$r" >>"$work/chat-results.jsonl"
        echo "$r" | python3 -c "
import json, sys
r = json.load(sys.stdin)
ttft = ' '.join('%.3f' % t for t in r['ttft_by_turn_s'])
tokens = ' '.join('%d' % t for t in r['prompt_tokens_by_turn'])
print('%-8s %3d %-6s | %-31s | %-23s | %6.0f%% | %9.1f' % ('$m', r['clients'], '$cache', ttft, tokens,
      100 * r['prompt_tokens_cached'] / r['prompt_tokens'], r['tokens_per_s']))"
      done
    done
  done
  printf '%-8s %3s %5s %-6s | %9s | %14s | %11s | %7s\n' model cl. batch cache "prompts/s" "scored tok/s" "latency p50" \
    "cached"
  for round in $(seq 1 "$rounds"); do
    for load in "1 1" "4 1" "1 4"; do
      read -r c batch <<<"$load"
      for cache in on off; do
        flag=""
        [ $cache = off ] && flag=--no-cache-prompt
        # shellcheck disable=SC2086  # flag is empty or one flag
        r=$(python3 bench/serve_load.py --port "$port" --clients $c --score-choices 4 --requests 4 --prompt 256 \
          --continuation 16 --score-batch $batch --seed $((10 * round + c + 5 * batch)) $flag)
        echo "$r" >>"$work/scoring-results.jsonl"
        echo "$r" | python3 -c "
import json, sys
r = json.load(sys.stdin)
print('%-8s %3d %5d %-6s | %9.2f | %14.1f | %10.3fs | %6.0f%%' % ('$m', r['clients'], r['score_batch'], '$cache',
      r['prompts_per_s'], r['scored_tokens_per_s'], r['latency_p50_s'], 100 * r['prompt_tokens_cached'] / r['prompt_tokens']))"
      done
    done
  done
  kill -TERM "$server"; wait "$server"
done
