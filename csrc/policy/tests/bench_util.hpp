// Helpers shared by the policy library's test programs (policy_check.cpp, rt_ablation.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace gail_robot_tests {

// A raw little-endian float32 file (numpy's `tofile`) as a vector.
inline std::vector<float> read_floats(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<float> v;
  float buf[1024];
  std::size_t n;
  while ((n = std::fread(buf, sizeof(float), 1024, f)) > 0) v.insert(v.end(), buf, buf + n);
  std::fclose(f);
  return v;
}

// The q-quantile of v (nearest rank), e.g. q = 0.99 for p99.
inline double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

}  // namespace gail_robot_tests
