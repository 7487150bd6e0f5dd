// Collectives: what the ranks of a multi-process run do together, as the layers below the
// distributed runtime need it: the MoE layer's expert-parallel all-to-all and its balance
// loss's batch sums, the model's loss normalisation, the trainer's gradient sums, checks and
// checkpoint gathering. src/dist implements it over MPI; a one-process run passes none (a
// null pointer) and every caller then works alone.
//
// Rank layout: N ranks form N/E expert-parallel groups of E consecutive ranks. In a model
// with F FFN experts, group rank q owns experts [q*F/E, (q+1)*F/E); ranks with the same group
// rank hold the same experts and are each other's data-parallel replicas. Every call is
// collective: all ranks of its scope make it, in the same order (group_send included, though
// only its two ends act).
#pragma once
#include <cstdint>

namespace moepp {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int ep_size() const = 0;
  int ep_rank() const { return rank() % ep_size(); }
  int dp_rank() const { return rank() / ep_size(); }
  int dp_size() const { return size() / ep_size(); }

  // Sums over every rank, in place.
  virtual void sum_all(double* v, int64_t n) = 0;
  virtual void sum_all(float* v, int64_t n) = 0;
  // Sums over this rank's data-parallel replicas (the ranks of the same group rank).
  virtual void sum_replicas(float* v, int64_t n) = 0;
  // The same two sums without blocking: start them, keep computing, then wait_sums() for
  // every one started; v must stay untouched until then. progress() lets started sums
  // advance (MPI moves them only inside its calls).
  virtual void start_sum_all(float* v, int64_t n) = 0;
  virtual void start_sum_replicas(float* v, int64_t n) = 0;
  virtual void progress() = 0;
  virtual void wait_sums() = 0;
  // Sums over this rank's expert-parallel group.
  virtual void sum_group(double* v, int64_t n) = 0;

  // The expert-parallel all-to-all. Counts: each rank sends n_each values to every group
  // rank (send[q*n_each ...]) and receives theirs (recv[s*n_each ...]).
  virtual void group_exchange_counts(const int64_t* send, int64_t* recv, int n_each) = 0;
  // Rows: send_rows[q] rows of row_bytes each, consecutive in `send`, go to group rank q;
  // recv_rows[s] rows from group rank s arrive consecutively in `recv`.
  virtual void group_exchange_rows(const void* send, const int64_t* send_rows, void* recv,
                                   const int64_t* recv_rows, int64_t row_bytes) = 0;
  // Copies group rank `from`'s bytes into group rank `to`'s buffer; the other ranks of the
  // group (and every other group) pass through.
  virtual void group_send(void* data, int64_t bytes, int from, int to) = 0;
  // The smallest and largest value over every rank (equal: all ranks agree).
  virtual void min_max_all(uint64_t v, uint64_t& min, uint64_t& max) = 0;
  virtual void barrier() = 0;

  // What crossed the network, counted by the implementation since construction: rows and
  // bytes sent to other ranks by group_exchange_rows (a rank's rows to itself excluded), the
  // group_exchange_counts calls, bytes summed by the allreduce calls, and the seconds spent
  // in each (waiting for the slowest rank included).
  struct Traffic {
    int64_t exchange_rows = 0, exchange_bytes = 0, exchange_calls = 0, count_calls = 0;
    int64_t allreduce_bytes = 0, allreduce_calls = 0;
    double exchange_seconds = 0, allreduce_seconds = 0;
  };
  Traffic traffic;
};

}  // namespace moepp
