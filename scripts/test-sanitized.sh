#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# MOEPP_SANITIZE): an out-of-bounds access, use after free, leak or undefined behaviour
# anywhere in moepp's own code fails the test that reaches it. About 16 minutes to build
# and 2 to test on 2 cores. Usage: bash scripts/test-sanitized.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-asan}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEPP_SANITIZE=ON -DMOEPP_BUILD_BENCH=OFF
cmake --build "$dir" -j "$(nproc)"
cd "$dir" && ctest --output-on-failure -LE long
