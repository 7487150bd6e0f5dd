#!/usr/bin/env bash
# moepp as an installed package: `cmake --install BUILD` into a scratch prefix, then build
# examples/c and examples/cpp against it with find_package(moepp) (the C++ one twice: on
# moepp::moepp, libmoepp_c.so, and on moepp::engine, the static engine with its
# dependencies), train a tiny model with the installed CLI and check the examples' output
# against the CLI's: greedy text byte for byte (`moepp generate --temperature 0`), logits
# bit for bit (`moepp logits --dtype bf16`, the same Session path); then the installed
# Python package, and that libmoepp_c.so exports the C API alone.
# Usage: bash scripts/test-installed.sh [BUILD_DIR]  (exit 77: skipped, in a sanitized build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
if grep -q '^MOEPP_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "skipped: a sanitized build's libraries need the sanitizer runtime in every program linking them"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
pass=0
fail=0
check() {  # check NAME COMMAND...: the command must succeed
  if "${@:2}" >"$tmp/check.out" 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; cat "$tmp/check.out"; fi
}

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
moepp=$prefix/bin/moepp
for f in include/moepp/moepp.h include/moepp/moepp.hpp include/moepp/error.hpp bin/moepp; do
  check "installed $f" test -f "$prefix/$f"
done
# The public headers name nothing but the standard library and each other.
check "headers are self-contained" bash -c "! grep -h '#include' '$prefix'/include/moepp/* | grep -v -E '<(stddef|stdint)\.h>|<[a-z_]+>|\"moepp/(moepp\.h|error\.hpp)\"'"
lib=$(ls "$prefix"/lib*/libmoepp_c.so 2>/dev/null || ls "$prefix"/lib/*/libmoepp_c.so)
check "libmoepp_c.so exports only moepp_*" bash -c "! nm -D --defined-only '$lib' | awk '{print \$3}' | grep -v '^moepp_'"

build_example() {  # build_example NAME SOURCE_DIR [CMAKE ARGS...]
  cmake -S "$root/examples/$2" -B "$tmp/$1" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    "${@:3}" >"$tmp/$1.configure.log" 2>&1 && cmake --build "$tmp/$1" >"$tmp/$1.build.log" 2>&1
}
check "build examples/c" build_example c c
check "build examples/cpp on moepp::moepp" build_example cpp cpp
check "build examples/cpp on moepp::engine" build_example cpp_engine cpp -DMOEPP_TARGET=moepp::engine

bash "$root/tests/api/make_model.sh" "$moepp" "$tmp/fixture" >/dev/null
model=$tmp/fixture/model
prompt="Line 12: the"
for dtype in f32 q8_0; do
  "$moepp" generate --model "$model" --prompt "$prompt" -n 16 --temperature 0 --dtype $dtype >"$tmp/cli_$dtype.txt"
  "$tmp/c/moepp_example_c" "$model" "$prompt" 16 $dtype >"$tmp/c_$dtype.txt" 2>"$tmp/c_$dtype.err" || true
  check "C example, $dtype: the CLI's greedy text" cmp "$tmp/cli_$dtype.txt" "$tmp/c_$dtype.txt"
  check "C example, $dtype: routing on stderr" grep -q "FFN experts per token" "$tmp/c_$dtype.err"
done
for variant in cpp cpp_engine; do
  "$tmp/$variant/moepp_example_cpp" "$model" "$prompt" 16 bf16 "$tmp/$variant.logits" >"$tmp/$variant.txt" \
    2>"$tmp/$variant.err" || true
  "$moepp" generate --model "$model" --prompt "$prompt" -n 16 --temperature 0 --dtype bf16 >"$tmp/cli_bf16.txt"
  check "$variant example: the CLI's greedy text" cmp "$tmp/cli_bf16.txt" "$tmp/$variant.txt"
  ids=$(sed -n 's/^ids: //p' "$tmp/$variant.err")
  if [ -n "$ids" ] && "$moepp" logits --model "$model" --ids "$ids" --dtype bf16 --out "$tmp/cli.safetensors"; then
    # The CLI's file ends with the tensor's data: the example's bytes, bit for bit.
    check "$variant example: the CLI's logits" cmp "$tmp/$variant.logits" \
      <(tail -c "$(stat -c %s "$tmp/$variant.logits")" "$tmp/cli.safetensors")
    check "$variant example: logits of $ids" test "$(stat -c %s "$tmp/$variant.logits")" -eq $((400 * 4 * $(echo "$ids" | tr ',' '\n' | wc -l)))
  else
    fail=$((fail + 1)); echo "FAIL: $variant example printed no ids"; cat "$tmp/$variant.err"
  fi
done

# The installed Python package finds the installed library by itself (no MOEPP_LIB).
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  pydir=$(dirname "$(find "$prefix" -name __init__.py -path '*/moepp/*' | head -1)")
  PYTHONPATH=$(dirname "$pydir") /usr/bin/python3 - "$model" "$prompt" "$lib" >"$tmp/py.txt" 2>&1 <<'EOF' || true
import os, sys
os.environ.pop("MOEPP_LIB", None)
import moepp
model, prompt, lib = sys.argv[1:]
assert os.path.realpath(moepp.library_path()) == os.path.realpath(lib), (moepp.library_path(), lib)
m = moepp.Model(model)
print(m.detokenize(m.tokenize(prompt)) + "".join(m.generate(prompt, max_tokens=16, temperature=0)))
EOF
  check "installed Python package: the CLI's greedy text" cmp "$tmp/cli_f32.txt" "$tmp/py.txt"
else
  echo "note: numpy missing, the installed Python package is not checked"
fi

echo "installed: $pass passed, $fail failed"
[ $fail -eq 0 ]
