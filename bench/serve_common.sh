# shellcheck shell=bash
# Sourced by the serving benchmarks (bench/serve_bench.sh, bench/serve_prompt_cache_bench.sh), from
# the repository root.

# serve_folders WORK: the Mixtral-shaped random model and its MoE++ twin (decode_bench's
# shapes and weights) as q8_0 folders WORK/q8/{vanilla,moepp}, with an 8192-piece tokenizer
# of the KJV corpus (make run, or scripts/get-corpus.sh) for the random models to decode
# with. Made once, then kept.
serve_folders() {
  local work=$1 m
  mkdir -p "$work"
  [ -s work/corpus/kjv.txt ] || bash scripts/get-corpus.sh work/corpus
  [ -s "$work/tok/tokenizer.model" ] ||
    build/moepp prepare --input work/corpus/kjv.txt --out "$work/tok" --vocab-size 8192 >/dev/null
  if [ ! -s "$work/q8/moepp/model.safetensors" ]; then
    build/bench/decode_bench --write-folders "$work/f32" --tokenizer "$work/tok/tokenizer.model"
    for m in vanilla moepp; do build/moepp convert --in "$work/f32/$m" --out "$work/q8/$m" --dtype q8_0; done
    rm -rf "$work/f32"
  fi
}

# start_server MOEPP FOLDER LOG [FLAGS...]: `MOEPP serve` of FOLDER's q8_0 weights on a free
# port, 16 sequences, 2 threads; sets $server (its pid) and $port once it listens.
start_server() {
  local moepp=$1 folder=$2 log=$3
  shift 3
  # The server pins its decoder's OpenMP team itself, one thread a CPU (serve/scheduler.cpp).
  # No OMP_PROC_BIND: with it the runtime binds the main thread to the first CPU, and every
  # request thread started from it inherits that one CPU.
  "$moepp" serve -m "$folder" --dtype q8_0 --port 0 --max-seqs 16 --threads 2 "$@" 2>"$log" &
  # shellcheck disable=SC2034  # $server is read by the scripts that source this file
  server=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(sed -nE 's/.*on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' "$log")
    [ -n "$port" ] && return 0
    sleep 0.2
  done
  echo "the server did not start; see $log" >&2
  return 1
}
