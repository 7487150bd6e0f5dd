#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/CMakeLists.txt: clang, ASan + UBSan, into
# fuzz/out/build) and fuzzes each for SECONDS (default 60), seeded from the test fixtures.
#   bash fuzz/run.sh [SECONDS] [TARGET...]      targets: pickle safetensors zip config index request
# Every target runs even when another finds something. Before fuzzing, a target replays
# the kept reproducers in fuzz/crashes/TARGET/ (each must now pass). At the end one
# summary line per target (executions, coverage, features, corpus size, verdict); the
# script exits non-zero naming the targets that failed. A failing input is left as
# fuzz/out/artifacts/TARGET/crash-* (or leak-, timeout-, oom-), the log as
# fuzz/out/TARGET.log (the reproducers' as fuzz/out/TARGET.reproducers.log). Corpora
# grow in fuzz/out/corpus-TARGET across runs.
# Environment: MOEPP_BUILD_LOCK=FILE serialises the build step with other builds (flock);
# MOEPP_FUZZ_JOBS (default: the number of CPUs) is the build's parallelism.
# docs/fuzzing.md says more.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[ $# -gt 0 ] && shift
all_targets=(pickle safetensors zip config index request)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
out=fuzz/out
mkdir -p "$out"

# --- build ----------------------------------------------------------------------------
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found (apt-get install clang)" >&2
  exit 2
fi
build() {
  if [ ! -f "$out/build/build.ninja" ]; then
    CXX=clang++ cmake -S fuzz -B "$out/build" -G Ninja >"$out/configure.log" 2>&1 || {
      cat "$out/configure.log" >&2
      return 1
    }
  fi
  local jobs=${MOEPP_FUZZ_JOBS:-$(nproc)}
  local names=()
  for t in "${targets[@]}"; do names+=("${t}_fuzz"); done
  if [ -n "${MOEPP_BUILD_LOCK:-}" ]; then
    flock "$MOEPP_BUILD_LOCK" cmake --build "$out/build" -j "$jobs" --target "${names[@]}"
  else
    cmake --build "$out/build" -j "$jobs" --target "${names[@]}"
  fi
}
if ! build >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log" >&2
  echo "fuzz: the build failed (full log: $out/build.log)" >&2
  exit 2
fi

# --- seeds ----------------------------------------------------------------------------
seed() {  # seed TARGET FILE...: copies the files into the target's corpus, by content
  local dir="$out/corpus-$1"
  mkdir -p "$dir"
  shift
  for f in "$@"; do cp "$f" "$dir/seed-$(sha1sum <"$f" | cut -c1-16)"; done
}
mapfile -t bins < <(find tests/fixtures -name '*.bin' -size -64k | sort)
mkdir -p "$out/pickles"
for f in "${bins[@]}"; do  # the data.pkl inside every torch.save fixture
  python3 - "$f" "$out/pickles" <<'PY' 2>/dev/null || true
import sys, zipfile, os, hashlib
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.endswith("data.pkl"):
        b = z.read(n)
        open(os.path.join(sys.argv[2], hashlib.sha1(b).hexdigest()[:16] + ".pkl"), "wb").write(b)
PY
done
seed pickle "$out"/pickles/*.pkl
mapfile -t sts < <(find tests/fixtures -name '*.safetensors' -size -64k | sort)
seed safetensors "${sts[@]}"
seed zip "${bins[@]}"
seed config tests/fixtures/hf/*/config.json
mapfile -t idx < <(find tests/fixtures -name '*.index.json' | sort)
seed index "${idx[@]}"
seed request fuzz/seeds/request/*.json

# --- fuzz -----------------------------------------------------------------------------
max_len() {
  case $1 in
    safetensors | zip) echo 65536 ;;
    config) echo 8192 ;;
    index) echo 16384 ;;
    *) echo 4096 ;;
  esac
}
dict() {  # the JSON targets get the JSON dictionary
  case $1 in
    config | index | request) echo "-dict=fuzz/json.dict" ;;
  esac
}
failed=()
summary=()
for t in "${targets[@]}"; do
  bin="$out/${t}_fuzz"
  log="$out/$t.log"
  art="$out/artifacts/$t"
  mkdir -p "$art"
  problems=()
  : >"$out/$t.reproducers.log"
  # Known reproducers first: each must run clean now.
  if compgen -G "fuzz/crashes/$t/*" >/dev/null; then
    for f in fuzz/crashes/"$t"/*; do
      [ -f "$f" ] || continue
      case $f in *.md | *.txt) continue ;; esac
      "$bin" -runs=1 "$f" >>"$out/$t.reproducers.log" 2>&1 || problems+=("reproducer $f still fails")
    done
  fi
  before=$(mktemp)
  "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    $(dict "$t") -artifact_prefix="$art/" "$out/corpus-$t" >"$log" 2>&1
  rc=$?
  # The last status line: "#N DONE cov: X ft: Y corp: C/..." or, after a crash, the last "#N ..." line.
  stats=$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | tail -1)
  execs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]*([0-9]+).*/\1/p' "$log" | tail -1)
  [ -z "$execs" ] && execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$stats")
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$stats")
  new_art=$(find "$art" -type f -newer "$before" | sort | tr '\n' ' ' | sed 's/ $//')
  rm -f "$before"
  if [ $rc -ne 0 ]; then
    kind=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-zA-Z -]+' "$log" |
      head -1)
    [ -z "$kind" ] && kind=$(grep -m1 -oE 'runtime error: .*' "$log" | cut -c1-80)
    problems+=("exit $rc: ${kind:-see $log}; input: ${new_art:-none}")
  fi
  verdict=ok
  if [ ${#problems[@]} -gt 0 ]; then
    failed+=("$t")
    verdict="FAILED ($(printf '%s; ' "${problems[@]}" | sed 's/; $//'))"
  fi
  summary+=("$(printf '%-12s execs %-10s cov %-6s ft %-6s corpus %-6s %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$verdict")")
done

echo "fuzz summary (${seconds}s per target; logs in $out/TARGET.log):"
for line in "${summary[@]}"; do echo "  $line"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: no failure in ${seconds}s per target"
