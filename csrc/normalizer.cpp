// Running mean / variance: one-pass batch moments (Welford, float64 accumulation) merged into the
// running state with the exact parallel update of Chan, Golub & LeVeque:
//   n = na + nb,  delta = mean_b - mean_a,
//   mean = mean_a + delta * nb / n,   M2 = M2_a + M2_b + delta^2 * na * nb / n.
// The running state is (count, mean, var) with var = M2 / count, as stored by RunningMeanStd.
#include <cmath>
#include <vector>

#include "common.h"

namespace gail_robot {
namespace {

// Moments of several independent columns: count (shared), mean and M2 per column.
struct Moments {
  double count = 0.0;
  std::vector<double> mean;
  std::vector<double> m2;
};

// Welford over `rows` rows of `width` contiguous values. The inner loop runs over the columns of a
// row, which are independent, so it vectorises; the division is hoisted out as one reciprocal per row.
template <typename T>
void welford_rows(const T* x, std::size_t rows, std::size_t width, double* __restrict mean, double* __restrict m2) {
  std::fill(mean, mean + width, 0.0);
  std::fill(m2, m2 + width, 0.0);
  for (std::size_t b = 0; b < rows; ++b) {
    const double inv = 1.0 / static_cast<double>(b + 1);
    const T* __restrict row = x + b * width;
    for (std::size_t d = 0; d < width; ++d) {
      const double xv = static_cast<double>(row[d]);
      const double delta = xv - mean[d];
      mean[d] += delta * inv;
      m2[d] += delta * (xv - mean[d]);
    }
  }
}

// Chan merge of column d of (nb, mean_b, m2_b) into acc.
inline void merge_into(double& na, double* mean_a, double* m2_a, double nb, const double* mean_b, const double* m2_b,
                       std::size_t width) {
  const double n = na + nb;
  if (nb == 0.0) return;
  for (std::size_t d = 0; d < width; ++d) {
    const double delta = mean_b[d] - mean_a[d];
    mean_a[d] += delta * (nb / n);
    m2_a[d] += m2_b[d] + delta * delta * (na * nb / n);
  }
  na = n;
}

// Moments of a (rows, width) batch over axis 0. With few columns, one Welford chain per column would
// be a serial dependency chain; instead k consecutive rows are read as one row of k * width lanes
// (k independent Welford chains per column, which vectorise) and the k partial moments are merged.
template <typename T>
Moments batch_moments(const T* x, std::size_t rows, std::size_t width) {
  constexpr std::size_t kLanes = 16;
  std::size_t k = width >= kLanes ? 1 : (kLanes + width - 1) / width;
  if (rows < 2 * k) k = 1;
  const std::size_t wide_rows = rows / k;
  const std::size_t lanes = k * width;
  std::vector<double> lane_mean(lanes), lane_m2(lanes);
  welford_rows(x, wide_rows, lanes, lane_mean.data(), lane_m2.data());

  Moments acc;
  acc.count = static_cast<double>(wide_rows);
  acc.mean.assign(lane_mean.begin(), lane_mean.begin() + static_cast<std::ptrdiff_t>(width));
  acc.m2.assign(lane_m2.begin(), lane_m2.begin() + static_cast<std::ptrdiff_t>(width));
  for (std::size_t g = 1; g < k; ++g) {
    merge_into(acc.count, acc.mean.data(), acc.m2.data(), static_cast<double>(wide_rows), &lane_mean[g * width],
               &lane_m2[g * width], width);
  }
  const std::size_t rest = rows - wide_rows * k;
  if (rest > 0) {
    std::vector<double> rest_mean(width), rest_m2(width);
    welford_rows(x + wide_rows * lanes, rest, width, rest_mean.data(), rest_m2.data());
    merge_into(acc.count, acc.mean.data(), acc.m2.data(), static_cast<double>(rest), rest_mean.data(),
               rest_m2.data(), width);
  }
  return acc;
}

template <typename T>
double update_binding(const CArray<T>& batch, CArray<double>& mean, CArray<double>& var, double count) {
  check_ndim("batch", batch.ndim(), 2);
  const py::ssize_t rows = batch.shape(0);
  const py::ssize_t width = batch.shape(1);
  check_size("mean", mean.size(), width);
  check_size("var", var.size(), width);
  if (rows < 1) throw py::value_error("batch.shape[0] should be >= 1, got " + std::to_string(rows));
  if (!(count >= 0.0) || !std::isfinite(count)) {
    throw py::value_error("count should be finite and >= 0, got " + std::to_string(count));
  }
  const T* x = batch.data();
  double* mu = mean.mutable_data();
  double* sigma2 = var.mutable_data();
  py::gil_scoped_release release;
  const std::size_t w = static_cast<std::size_t>(width);
  const Moments b = batch_moments(x, static_cast<std::size_t>(rows), w);
  // The running state holds var, not M2: M2 = var * count before the merge, var = M2 / count after.
  std::vector<double> m2(w);
  for (std::size_t d = 0; d < w; ++d) m2[d] = sigma2[d] * count;
  double n = count;
  merge_into(n, mu, m2.data(), b.count, b.mean.data(), b.m2.data(), w);
  for (std::size_t d = 0; d < w; ++d) sigma2[d] = m2[d] / n;
  return n;
}

// The variance floor of normalisation (docs/DESIGN.md §2); exported as _core.NORM_EPSILON so that Python and
// the exported policy use this one value.
constexpr double kNormEpsilon = 1e-8;

// out = clip((x - mean) / sqrt(var + eps), -clip, clip) as float32, computed in float64 with the
// same correctly rounded operations as the NumPy reference (so the two agree bit for bit).
template <typename T>
void normalize_binding(const CArray<T>& x, const CArray<double>& mean, const CArray<double>& var, double clip,
                       CArray<float>& out) {
  check_ndim("x", x.ndim(), 2);
  const py::ssize_t rows = x.shape(0);
  const py::ssize_t width = x.shape(1);
  check_size("mean", mean.size(), width);
  check_size("var", var.size(), width);
  check_size("out", out.size(), rows * width);
  if (!(clip > 0.0)) throw py::value_error("clip should be > 0, got " + std::to_string(clip));
  const T* xs = x.data();
  const double* mu = mean.data();
  const double* sigma2 = var.data();
  float* ys = out.mutable_data();
  py::gil_scoped_release release;
  const std::size_t w = static_cast<std::size_t>(width);
  std::vector<double> std_dev(w);
  for (std::size_t d = 0; d < w; ++d) std_dev[d] = std::sqrt(sigma2[d] + kNormEpsilon);
  const double* sd = std_dev.data();
  constexpr std::size_t kMinRowsPerThread = 4096;
  parallel_for(static_cast<std::size_t>(rows), 1, kMinRowsPerThread, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      const T* __restrict xr = xs + r * w;
      float* __restrict yr = ys + r * w;
      for (std::size_t d = 0; d < w; ++d) {
        double z = (static_cast<double>(xr[d]) - mu[d]) / sd[d];
        z = z < -clip ? -clip : z;  // NaN compares false both times and stays NaN, as in np.clip
        z = z > clip ? clip : z;
        yr[d] = static_cast<float>(z);
      }
    }
  });
}

template <typename T>
void def_normalizer(py::module_& m, const char* update_name, const char* normalize_name) {
  m.def(update_name, &update_binding<T>, py::arg("batch").noconvert(), py::arg("mean").noconvert(),
        py::arg("var").noconvert(), py::arg("count"),
        "Merge a C-contiguous (B, D) batch into float64 mean/var (D,) in place; returns the new count.");
  m.def(normalize_name, &normalize_binding<T>, py::arg("x").noconvert(), py::arg("mean").noconvert(),
        py::arg("var").noconvert(), py::arg("clip"), py::arg("out").noconvert(),
        "out = clip((x - mean) / sqrt(var + NORM_EPSILON), -clip, clip) for a (M, D) x; out is float32.");
}

}  // namespace

void register_normalizer(py::module_& m) {
  m.attr("NORM_EPSILON") = kNormEpsilon;
  def_normalizer<float>(m, "rms_update_f32", "rms_normalize_f32");
  def_normalizer<double>(m, "rms_update_f64", "rms_normalize_f64");
}

}  // namespace gail_robot
