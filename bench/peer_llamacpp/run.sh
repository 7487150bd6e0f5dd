#!/usr/bin/env bash
# bench/peer_llamacpp: moepp against llama.cpp (the CPU build prebuilt in the npm package
# node-llama-cpp@3.21.1, pinned by package-lock.json and installed here with `npm ci`) on
# the same random Mixtral-shaped model (decode_bench's: vocab 8192, hidden 1024, 8 layers,
# 16/8 heads, FFN 2816, 8 experts, top-2), written once as a moepp folder and converted to
#   - moepp folders by `moepp convert --dtype bf16|q8_0|q4` (f32: the folder itself), and
#   - GGUF files by tools/bench/folder_to_gguf.py (f32, bf16, Q8_0, Q4_0; every matrix in
#     the format, norms and routers f32, on both sides).
# Then:
#   1. agreement in f32: moepp's log-softmax against llama.cpp's next-token probabilities
#      over the first 32 prompt positions, the whole vocabulary;
#   2. --rounds rounds; each runs, per format, one process of each engine (alternating
#      which goes first): load (timed), prefill the --prompt token prompt twice (the first
#      in the process, then warm), decode --decode tokens one at a time (greedy); and
#      measures the machine's GEMM rate (oneDNN, f32, bf16 and int8) once;
#   3. medians, ratios moepp / llama.cpp, and prefill against the GEMM rate (report.py).
# Loads are timed with the model's files in the page cache.
# llama.cpp runs with its defaults for timing (f16 KV cache, flash attention "auto"); moepp
# with its own (f32 KV cache). Both take --threads threads.
#
# Usage: bench/peer_llamacpp/run.sh [--rounds 8] [--types f32,bf16,q8_0,q4] [--prompt 512]
#                                   [--decode 128] [--threads 2] [--work DIR] [--build DIR]
# Needs: a built tree (build/moepp, build/bench/{decode_bench,peer_round}), node and npm
# with the npm registry reachable, and a python3 with numpy (Debian: python3-numpy).
# The work folder (default /tmp/moepp-peer-llamacpp) keeps the models (~8 GB) between runs;
# the results go to WORK/results.jsonl and the tables to stdout and WORK/report.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rounds=8 types=f32,bf16,q8_0,q4 prompt=512 decode=128 threads=2 work=/tmp/moepp-peer-llamacpp build="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2" ;; --types) types="$2" ;; --prompt) prompt="$2" ;; --decode) decode="$2" ;;
    --threads) threads="$2" ;; --work) work="$2" ;; --build) build="$2" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift 2
done
say() { printf '[peer_llamacpp %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

moepp="$build/moepp" decode_bench="$build/bench/decode_bench" peer_round="$build/bench/peer_round"
for b in "$moepp" "$decode_bench" "$peer_round"; do
  [ -x "$b" ] || { echo "run.sh: $b is missing; build first (README: cmake --build build)" >&2; exit 1; }
done
command -v node >/dev/null && command -v npm >/dev/null || { echo "run.sh: needs node and npm (apt-get install nodejs npm)" >&2; exit 1; }
python=""
for p in python3 /usr/bin/python3; do
  if "$p" -c "import numpy" 2>/dev/null; then python="$p"; break; fi
done
[ -n "$python" ] || { echo "run.sh: needs a python3 with numpy (apt-get install python3-numpy)" >&2; exit 1; }

mkdir -p "$work/node"
cp "$here/package.json" "$here/package-lock.json" "$here/llama_round.mjs" "$work/node/"
if [ ! -d "$work/node/node_modules/node-llama-cpp" ] || ! cmp -s "$here/package-lock.json" "$work/node/.installed-lock"; then
  say "npm ci (node-llama-cpp, pinned)"
  (cd "$work/node" && npm ci --no-audit --no-fund --loglevel=error) || { echo "run.sh: npm ci failed (registry unreachable?)" >&2; exit 1; }
  cp "$here/package-lock.json" "$work/node/.installed-lock"
fi

# The models: one f32 moepp folder, then each format on both sides (kept between runs).
folder="$work/folders/vanilla"
if [ ! -f "$folder/model.safetensors" ]; then
  say "writing the Mixtral-shaped folder (decode_bench --write-folders)"
  "$decode_bench" --write-folders "$work/folders" >&2
  rm -rf "$work/folders/moepp"  # its MoE++ twin: llama.cpp cannot run it
fi
IFS=, read -r -a type_list <<<"$types"
for t in "${type_list[@]}"; do
  case "$t" in f32|bf16|q8_0|q4) ;; *) echo "run.sh: unknown type $t (f32, bf16, q8_0, q4)" >&2; exit 2 ;; esac
  gguf_type=$t; [ "$t" = q4 ] && gguf_type=q4_0
  if [ "$t" != f32 ] && [ ! -f "$work/moepp-$t/config.json" ]; then
    say "moepp convert --dtype $t"
    "$moepp" convert --in "$folder" --out "$work/moepp-$t" --dtype "$t" >&2
  fi
  if [ ! -f "$work/llama-$t.gguf" ]; then
    say "folder_to_gguf.py --type $gguf_type"
    "$python" "$root/tools/bench/folder_to_gguf.py" "$folder" "$work/llama-$t.gguf" --type "$gguf_type"
  fi
done
moepp_model() { if [ "$1" = f32 ]; then echo "$folder"; else echo "$work/moepp-$1"; fi; }
# Loading is timed from the page cache: each model's files are read once just before its run
# (this VM evicts pages of files it has not read for a while; a load from disk is ~10x slower).
from_cache() { cat "$@" >/dev/null; }

# The prompt: random ids past the special and byte pieces, the same for every run.
"$python" -c "
import random; random.seed(11)
print(','.join(str(random.randrange(259, 8192)) for _ in range($prompt)))" >"$work/prompt.ids"
tr ',' '\n' <"$work/prompt.ids" | head -32 | paste -sd, >"$work/prompt32.ids"

say "agreement in f32 (32 positions)"
"$moepp" logits --model "$folder" --ids "@$work/prompt32.ids" --out "$work/moepp-logits32.safetensors" --threads "$threads" >&2
(cd "$work/node" && node llama_round.mjs --model "$work/llama-f32.gguf" --ids "$work/prompt32.ids" --probs "$work/llama-probs32.json" --positions 32 --threads "$threads" >&2)
agreement=$("$python" "$here/report.py" agreement "$work/moepp-logits32.safetensors" "$work/llama-probs32.json")

results="$work/results.jsonl"
: >"$results"
for r in $(seq 1 "$rounds"); do
  say "round $r of $rounds"
  "$peer_round" --gemm-rate "$prompt,2816,1024" --threads "$threads" 2>/dev/null >>"$results"
  for t in "${type_list[@]}"; do
    moepp_run() { from_cache "$(moepp_model "$t")"/*.safetensors; "$peer_round" --model "$(moepp_model "$t")" --dtype "$t" --ids "$work/prompt.ids" --decode "$decode" --threads "$threads" 2>/dev/null; }
    llama_run() { from_cache "$work/llama-$t.gguf"; (cd "$work/node" && node llama_round.mjs --model "$work/llama-$t.gguf" --ids "$work/prompt.ids" --decode "$decode" --threads "$threads"); }
    if [ $((r % 2)) -eq 1 ]; then first=moepp_run second=llama_run; else first=llama_run second=moepp_run; fi
    for run in $first $second; do
      line=$($run)
      "$python" -c "import json,sys; d=json.loads(sys.argv[1]); d.update(dtype=sys.argv[2], round=int(sys.argv[3])); print(json.dumps(d))" \
        "$line" "$t" "$r" >>"$results"
    done
  done
done

{
  echo "## moepp vs llama.cpp (node-llama-cpp 3.21.1), $(date -u +%Y-%m-%d), $(nproc) CPUs, $threads threads"
  echo
  echo "f32 agreement, moepp log-softmax vs llama.cpp probabilities (f32 KV, no flash attention): $agreement"
  echo
  "$python" "$here/report.py" summary "$results" "$folder/config.json"
} | tee "$work/report.md"
