// A build without MPI (no libopenmpi-dev at configure time): one process only.
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "dist/mpi_collectives.h"

namespace moepp {

bool built_with_mpi() { return false; }

std::unique_ptr<Collectives> start_distributed(int ep_size) {
  MOEPP_CHECK(!launched_by_mpirun(), "this moepp was built without MPI, so it cannot run under mpirun "
              "(install libopenmpi-dev and openmpi-bin, then rebuild)");
  MOEPP_CHECK(ep_size == 1, "--ep-size ", ep_size, " needs an MPI build run under mpirun");
  return nullptr;
}

void abort_distributed(const Collectives&, const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(1);
}

}  // namespace moepp
