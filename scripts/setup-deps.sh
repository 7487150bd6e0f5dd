#!/usr/bin/env bash
# Installs the Debian packages moepp builds and tests with. Idempotent: installs only what
# is missing. Set MOEPP_WITH_TORCH=1 to also install python3-torch (reference fixtures and
# the PyTorch peer benchmarks; never needed to build or test).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libdnnl-dev libopenblas-dev
      libgtest-dev libbenchmark-dev nlohmann-json3-dev libsentencepiece-dev libcli11-dev
      python3-numpy  # the Python package (python/moepp) and its test, api.python
      libcpp-httplib-dev  # moepp serve (the HTTP server)
      libopenmpi-dev openmpi-bin  # mpirun -np N moepp train/eval (src/dist) and the dist.* tests
      gnuplot-nox)   # gnuplot: the PNGs of `moepp plot` and `analyze` (cli.plot skips itself without it)
if [ "${MOEPP_WITH_TORCH:-0}" = 1 ]; then pkgs+=(python3-torch); fi
# Node and npm run the end-to-end test with the official OpenAI client (e2e.openai_client);
# a Node installed another way (with its own npm) is used as it is.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then pkgs+=(nodejs npm); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "setup-deps: all packages present"; exit 0; fi
echo "setup-deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
