#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (Debian's clang-14: -fsanitize=fuzzer,address,
# undefined) and fuzzes each for SECONDS (default 60), seeded with the test fixtures.
#   bash fuzz/run.sh [SECONDS]
# A crash leaves its input as fuzz/out/crash-*; the script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=fuzz/out
mkdir -p "$out/corpus-pickle" "$out/corpus-safetensors"
flags="-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc"
common="src/core/dtype.cpp src/core/tensor.cpp src/io/mapped_file.cpp src/io/atomic_file.cpp"
clang++ $flags fuzz/pickle_fuzz.cpp src/io/torch_pickle.cpp $common -o "$out/pickle_fuzz"
clang++ $flags fuzz/safetensors_fuzz.cpp src/io/safetensors.cpp $common -o "$out/safetensors_fuzz"
# Seeds: the data.pkl of every torch.save fixture, and every safetensors fixture.
for f in $(find tests/fixtures/torch_bin -name '*.bin'); do
  python3 - "$f" "$out/corpus-pickle" <<'PY' 2>/dev/null || true
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.endswith("data.pkl"):
        open(os.path.join(sys.argv[2], os.path.basename(sys.argv[1]) + ".pkl"), "wb").write(z.read(n))
PY
done
cp $(find tests/fixtures -name '*.safetensors' -size -64k) "$out/corpus-safetensors/" 2>/dev/null || true
"$out/pickle_fuzz" -max_total_time="$seconds" -artifact_prefix="$out/" "$out/corpus-pickle"
"$out/safetensors_fuzz" -max_total_time="$seconds" -max_len=65536 -artifact_prefix="$out/" "$out/corpus-safetensors"
echo "fuzz: no crash in ${seconds}s per target"
