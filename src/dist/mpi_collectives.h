// The distributed runtime: Collectives over MPI (OpenMPI; src/dist/mpi_collectives.cpp), or,
// in a build without MPI, a stand-in that says so (src/dist/no_mpi.cpp). Not part of
// libmoepp: the CLI and the distributed tests link it, so the library never depends on MPI.
//
// start_distributed() initialises MPI once per process when the process was started by
// mpirun (a plain start stays one process and gets null), splits the world into
// expert-parallel groups of ep_size consecutive ranks and their replica groups, and returns
// the Collectives the trainer and the MoE layers use. The returned object finalises MPI when
// destroyed; abort_distributed() ends every rank of the job after an error on one.
#pragma once
#include <memory>
#include <string>

#include "core/collectives.h"

namespace moepp {

bool built_with_mpi();
// True when OpenMPI's (or PMIx's) launcher started this process.
bool launched_by_mpirun();
// Null when not launched by mpirun (ep_size must then be 1). Throws on a bad ep_size.
std::unique_ptr<Collectives> start_distributed(int ep_size);
// Prints "error: rank R of N: message" and ends the whole job with exit code 1.
[[noreturn]] void abort_distributed(const Collectives& comm, const std::string& message);

}  // namespace moepp
