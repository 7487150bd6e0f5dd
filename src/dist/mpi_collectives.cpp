// Collectives over MPI. Three communicators: the world (gradients of replicated
// parameters, the balance loss's sums, checks), the expert-parallel group of ep_size
// consecutive ranks (the all-to-all, checkpoint gathering), and the replica group of the
// ranks with the same group rank (gradients of the experts they share).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "dist/mpi_collectives.h"

namespace moepp {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

// MPI counts are int: larger sums go in pieces.
constexpr int64_t kMaxPiece = int64_t(1) << 28;

class MpiCollectives final : public Collectives {
 public:
  explicit MpiCollectives(int ep_size) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (ep_size < 1 || size_ % ep_size != 0) {
      if (rank_ == 0)
        std::fprintf(stderr, "error: --ep-size %d must divide the %d ranks mpirun started\n", ep_size, size_);
      MPI_Finalize();
      std::exit(1);
    }
    ep_size_ = ep_size;
    MPI_Comm_split(MPI_COMM_WORLD, rank_ / ep_size_, rank_, &group_);
    MPI_Comm_split(MPI_COMM_WORLD, rank_ % ep_size_, rank_, &replicas_);
  }
  ~MpiCollectives() override {
    if (!pending_.empty()) MPI_Waitall(int(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    MPI_Comm_free(&group_);
    MPI_Comm_free(&replicas_);
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int ep_size() const override { return ep_size_; }

  void sum_all(double* v, int64_t n) override { allreduce(v, n, MPI_DOUBLE, sizeof(double), MPI_COMM_WORLD); }
  void sum_all(float* v, int64_t n) override { allreduce(v, n, MPI_FLOAT, sizeof(float), MPI_COMM_WORLD); }
  void sum_replicas(float* v, int64_t n) override { allreduce(v, n, MPI_FLOAT, sizeof(float), replicas_); }
  void sum_group(double* v, int64_t n) override { allreduce(v, n, MPI_DOUBLE, sizeof(double), group_); }

  void start_sum_all(float* v, int64_t n) override { start_allreduce(v, n, MPI_COMM_WORLD); }
  void start_sum_replicas(float* v, int64_t n) override { start_allreduce(v, n, replicas_); }
  void progress() override {
    if (pending_.empty()) return;
    int done = 0;
    MPI_Testall(int(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE);
    if (done) pending_.clear();
  }
  void wait_sums() override {
    if (pending_.empty()) return;
    const auto t0 = clock_type::now();
    MPI_Waitall(int(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    pending_.clear();
    traffic.allreduce_seconds += since(t0);
  }

  void group_exchange_counts(const int64_t* send, int64_t* recv, int n_each) override {
    const auto t0 = clock_type::now();
    MPI_Alltoall(send, n_each, MPI_INT64_T, recv, n_each, MPI_INT64_T, group_);
    ++traffic.count_calls;
    traffic.exchange_seconds += since(t0);
  }

  void group_exchange_rows(const void* send, const int64_t* send_rows, void* recv, const int64_t* recv_rows,
                           int64_t row_bytes) override {
    const auto t0 = clock_type::now();
    const int me = rank_ % ep_size_;
    MPI_Datatype row;
    MOEPP_CHECK(row_bytes > 0 && row_bytes <= INT_MAX, "expert parallel: a row of ", row_bytes, " bytes");
    MPI_Type_contiguous(int(row_bytes), MPI_BYTE, &row);
    MPI_Type_commit(&row);
    const size_t members = static_cast<size_t>(ep_size_);
    std::vector<int> sc(members), sd(members), rc(members), rd(members);
    int64_t s_at = 0, r_at = 0;
    for (int q = 0; q < ep_size_; ++q) {
      MOEPP_CHECK(s_at + send_rows[q] <= INT_MAX && r_at + recv_rows[q] <= INT_MAX,
                  "expert parallel: more than 2^31 rows in one exchange");
      sc[size_t(q)] = int(send_rows[q]);
      sd[size_t(q)] = int(s_at);
      rc[size_t(q)] = int(recv_rows[q]);
      rd[size_t(q)] = int(r_at);
      s_at += send_rows[q];
      r_at += recv_rows[q];
      if (q != me) {
        traffic.exchange_rows += send_rows[q];
        traffic.exchange_bytes += send_rows[q] * row_bytes;
      }
    }
    MPI_Alltoallv(send, sc.data(), sd.data(), row, recv, rc.data(), rd.data(), row, group_);
    MPI_Type_free(&row);
    ++traffic.exchange_calls;
    traffic.exchange_seconds += since(t0);
  }

  void group_send(void* data, int64_t bytes, int from, int to) override {
    const int me = rank_ % ep_size_;
    if (from == to || (me != from && me != to)) return;
    char* p = static_cast<char*>(data);
    for (int64_t at = 0; at < bytes; at += kMaxPiece) {
      const int piece = int(std::min(kMaxPiece, bytes - at));
      if (me == from) MPI_Send(p + at, piece, MPI_BYTE, to, 0, group_);
      else MPI_Recv(p + at, piece, MPI_BYTE, from, 0, group_, MPI_STATUS_IGNORE);
    }
  }

  void min_max_all(uint64_t v, uint64_t& min, uint64_t& max) override {
    MPI_Allreduce(&v, &min, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &max, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  }

  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }

 private:
  void allreduce(void* v, int64_t n, MPI_Datatype type, size_t elem, MPI_Comm comm) {
    int members = 1;
    MPI_Comm_size(comm, &members);
    if (members == 1 || n == 0) return;
    const auto t0 = clock_type::now();
    char* p = static_cast<char*>(v);
    for (int64_t at = 0; at < n; at += kMaxPiece) {
      const int64_t piece = std::min(kMaxPiece, n - at);
      MPI_Allreduce(MPI_IN_PLACE, p + size_t(at) * elem, int(piece), type, MPI_SUM, comm);
    }
    traffic.allreduce_bytes += n * int64_t(elem);
    ++traffic.allreduce_calls;
    traffic.allreduce_seconds += since(t0);
  }

  void start_allreduce(float* v, int64_t n, MPI_Comm comm) {
    int members = 1;
    MPI_Comm_size(comm, &members);
    if (members == 1 || n == 0) return;
    for (int64_t at = 0; at < n; at += kMaxPiece) {
      MPI_Request r;
      MPI_Iallreduce(MPI_IN_PLACE, v + at, int(std::min(kMaxPiece, n - at)), MPI_FLOAT, MPI_SUM, comm, &r);
      pending_.push_back(r);
    }
    traffic.allreduce_bytes += n * int64_t(sizeof(float));
    ++traffic.allreduce_calls;
  }

  int rank_ = 0, size_ = 1, ep_size_ = 1;
  std::vector<MPI_Request> pending_;  // started non-blocking sums
  MPI_Comm group_ = MPI_COMM_NULL, replicas_ = MPI_COMM_NULL;
};

}  // namespace

bool built_with_mpi() { return true; }

std::unique_ptr<Collectives> start_distributed(int ep_size) {
  if (!launched_by_mpirun()) {
    MOEPP_CHECK(ep_size == 1, "--ep-size ", ep_size, " needs several processes: start moepp with mpirun -np N");
    return nullptr;
  }
  return std::make_unique<MpiCollectives>(ep_size);
}

void abort_distributed(const Collectives& comm, const std::string& message) {
  std::fprintf(stderr, "error: rank %d of %d: %s\n", comm.rank(), comm.size(), message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace moepp
