// How a process learns it was started by mpirun: the launcher's environment. Built with and
// without MPI alike (a build without it must still recognise mpirun and refuse).
#include <cstdlib>

#include "dist/mpi_collectives.h"

namespace moepp {

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
}

}  // namespace moepp
