#!/usr/bin/env bash
# bench/dist: the MoE++ layer and its vanilla twin trained across 2 and 4 ranks of this
# machine (bench/dist_bench.cpp says what a step is and what is reported): -np 2 as one
# expert-parallel group, -np 4 as one group of 4, and -np 4 as 2 data-parallel replicas of
# groups of 2. One thread per rank; 4 ranks on fewer cores oversubscribe them, and their
# all-to-all time then includes waiting for ranks that share a core.
# Usage: bench/dist_bench.sh [BUILD_DIR (build)] [OUT_DIR (bench-dist-DATE)] [extra dist_bench flags]
set -euo pipefail
build=${1:-build}
out=${2:-bench-dist-$(date +%Y%m%d-%H%M%S)}
shift $(( $# > 2 ? 2 : $# ))
bench="$build/bench/dist_bench"
if [[ ! -x "$bench" ]]; then
  echo "dist_bench: $bench not built (it needs MPI: apt-get install libopenmpi-dev openmpi-bin)" >&2
  exit 2
fi
mkdir -p "$out"
export OMP_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [[ $(id -u) == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
for run in "2 2" "4 4" "4 2"; do
  set -- $run "$@"
  np=$1 ep=$2
  shift 2
  echo "== mpirun -np $np dist_bench --ep-size $ep $*"
  mpirun -np "$np" "$bench" --ep-size "$ep" --json "$out/np${np}_ep${ep}.json" "$@"
done
echo "results: $out/np*_ep*.json"
