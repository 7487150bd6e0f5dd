#include "kernels/dot.h"

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

// The exact dot of the f32 values (every product and sum in double), and the sum of the
// products' magnitudes: the scale a rounding error is measured against.
struct Exact {
  double value = 0, magnitude = 0;
};
Exact exact_dot(const float* a, const float* b, int64_t n) {
  Exact e;
  for (int64_t i = 0; i < n; ++i) {
    e.value += double(a[i]) * double(b[i]);
    e.magnitude += std::fabs(double(a[i]) * double(b[i]));
  }
  return e;
}

// Lengths around the 16 lanes (empty, tail only, whole lanes, lanes plus a tail) and the
// hidden size of the released model.
const int64_t kLengths[] = {0, 1, 5, 15, 16, 17, 31, 32, 33, 100, 1536, 1539};

}  // namespace

TEST(Dot, F32MatchesTheExactDotWithinF32Rounding) {
  Rng rng(11);
  for (int64_t n : kLengths) {
    auto a = random_tensor<float>({n + 1}, rng), b = random_tensor<float>({n + 1}, rng);
    const Exact want = exact_dot(a.data(), b.data(), n);
    const float got = dot<float>(a.data(), b.data(), n);
    // 16 partial sums of n / 16 terms, then 16 more additions.
    const double bound = 1.2e-7 * double(n / 16 + 20) * want.magnitude + 1e-30;
    EXPECT_LE(std::fabs(double(got) - want.value), bound) << "n " << n;
    EXPECT_NEAR(dot<double>(a.data(), b.data(), n), want.value, 1e-15 * want.magnitude + 1e-300) << "n " << n;
  }
}

TEST(Dot, TwoDotsMatchTheExactDotsInF32AndInDouble) {
  Rng rng(12);
  for (int64_t n : kLengths) {
    auto x = random_tensor<float>({n + 1}, rng), p = random_tensor<float>({n + 1}, rng),
         q = random_tensor<float>({n + 1}, rng);
    const Exact want_p = exact_dot(x.data(), p.data(), n), want_q = exact_dot(x.data(), q.data(), n);
    float fp = -1, fq = -1;
    two_dots<float>(x.data(), p.data(), q.data(), n, fp, fq);
    const double slack = 1.2e-7 * double(n / 16 + 20);
    EXPECT_LE(std::fabs(double(fp) - want_p.value), slack * want_p.magnitude + 1e-30) << "n " << n;
    EXPECT_LE(std::fabs(double(fq) - want_q.value), slack * want_q.magnitude + 1e-30) << "n " << n;
    double dp = -1, dq = -1;
    two_dots<double>(x.data(), p.data(), q.data(), n, dp, dq);
    EXPECT_NEAR(dp, want_p.value, 1e-15 * want_p.magnitude + 1e-300) << "n " << n;
    EXPECT_NEAR(dq, want_q.value, 1e-15 * want_q.magnitude + 1e-300) << "n " << n;
  }
}

TEST(Dot, DoubleInputsMatchALongDoubleSum) {
  Rng rng(13);
  for (int64_t n : kLengths) {
    auto a = random_tensor<double>({n + 1}, rng), b = random_tensor<double>({n + 1}, rng),
         c = random_tensor<double>({n + 1}, rng);
    long double ab = 0, ac = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ab += (long double)a[i] * b[i];
      ac += (long double)a[i] * c[i];
      mag += std::fabs((long double)a[i] * b[i]) + std::fabs((long double)a[i] * c[i]);
    }
    const double tol = 1e-15 * double(n / 16 + 20) * double(mag) + 1e-300;
    EXPECT_NEAR(dot<double>(a.data(), b.data(), n), double(ab), tol) << "n " << n;
    double got_b = 0, got_c = 0;
    two_dots<double>(a.data(), b.data(), c.data(), n, got_b, got_c);
    EXPECT_NEAR(got_b, double(ab), tol) << "n " << n;
    EXPECT_NEAR(got_c, double(ac), tol) << "n " << n;
  }
}
