// policy_check: the C++ side of the policy library's tests and benchmark (tests/test_policy_lib.py,
// benchmarks/bench_export.py). Prints one JSON object.
//
//   policy_check --policy P [--obs OBS.f32 --actions-out ACT.f32] [--calls N] [--warmup N]
//                [--backend auto|native|libtorch] [--no-flush-denormals]
//
// 1. loads P (errors: one line on stderr, exit 2);
// 2. after --warmup act() calls, counts heap allocations during --calls act() calls (alloc_counter.hpp
//    interposes malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc and every
//    operator new, counting while a flag is set on the calling thread);
// 3. times --calls act() calls (p50 / p99 / max, microseconds);
// 4. writes the actions of every row of OBS.f32 (raw float32, obs_dim per row) to ACT.f32;
// 5. feeds a NaN observation and reports whether it was refused with the previous action held.
#include <gail_robot/policy.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "bench_util.hpp"

namespace {

using gail_robot_tests::percentile;
using gail_robot_tests::read_floats;

int run(int argc, char** argv) {
  std::string policy_path, obs_path, actions_out;
  long calls = 10000;
  gail_robot::PolicyOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--policy") policy_path = next();
    else if (a == "--obs") obs_path = next();
    else if (a == "--actions-out") actions_out = next();
    else if (a == "--calls") calls = std::stol(next());
    else if (a == "--warmup") options.warmup_calls = std::stoi(next());
    else if (a == "--backend") options.backend = next();
    else if (a == "--no-flush-denormals") options.flush_denormals = false;
    else throw std::runtime_error("unknown option '" + a + "'");
  }
  if (policy_path.empty() || calls < 1) throw std::runtime_error("--policy is required, --calls >= 1");
  gail_robot::Policy policy = gail_robot::Policy::load(policy_path, options);
  const auto obs_n = static_cast<std::size_t>(policy.obs_dim()), act_n = static_cast<std::size_t>(policy.act_dim());

  std::vector<float> obs = obs_path.empty() ? std::vector<float>(obs_n, 0.0f) : read_floats(obs_path);
  if (obs.empty() || obs.size() % obs_n != 0)
    throw std::runtime_error(obs_path + " does not hold rows of obs_dim floats");
  const std::size_t rows = obs.size() / obs_n;
  std::vector<float> action(act_n), actions(rows * act_n);

  // Allocations after the warm-up load() made: cycle through the observations.
  alloc_counter::AllocationCount counting;
  for (long i = 0; i < calls; ++i)
    policy.act(obs.data() + (static_cast<std::size_t>(i) % rows) * obs_n, action.data());
  const long allocations = counting.stop();

  std::vector<double> us(static_cast<std::size_t>(calls));
  for (long i = 0; i < calls; ++i) {
    const float* o = obs.data() + (static_cast<std::size_t>(i) % rows) * obs_n;
    const auto t0 = std::chrono::steady_clock::now();
    policy.act(o, action.data());
    us[static_cast<std::size_t>(i)] =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }

  bool all_ok = true;
  for (std::size_t r = 0; r < rows; ++r) all_ok &= policy.act(obs.data() + r * obs_n, actions.data() + r * act_n);
  if (!actions_out.empty()) {
    std::FILE* f = std::fopen(actions_out.c_str(), "wb");
    if (!f || std::fwrite(actions.data(), sizeof(float), actions.size(), f) != actions.size())
      throw std::runtime_error("cannot write " + actions_out);
    std::fclose(f);
  }

  // A NaN observation: refused, the last action (of the last row) held.
  std::vector<float> last(actions.end() - static_cast<std::ptrdiff_t>(act_n), actions.end());
  std::vector<float> bad(obs.begin(), obs.begin() + static_cast<std::ptrdiff_t>(obs_n));
  bad[obs_n / 2] = std::numeric_limits<float>::quiet_NaN();
  const bool nan_accepted = policy.act(bad.data(), action.data());
  const bool nan_held = std::equal(action.begin(), action.end(), last.begin());
  const bool size_refused = !policy.act(obs.data(), obs_n + 1, action.data(), act_n);

  std::printf(
      "{\"backend\": \"%s\", \"allocation_free\": %s, \"obs_dim\": %zu, \"act_dim\": %zu, \"env_id\": \"%s\", "
      "\"calls\": %ld, \"allocations\": %ld, \"act_us_p50\": %.3f, \"act_us_p99\": %.3f, \"act_us_max\": %.3f, "
      "\"rows\": %zu, \"all_accepted\": %s, \"nan_refused\": %s, \"nan_action_held\": %s, \"size_refused\": %s, "
      "\"refused\": %llu}\n",
      policy.backend().c_str(), policy.allocation_free() ? "true" : "false", obs_n, act_n,
      policy.meta().env_id.c_str(), calls, allocations, percentile(us, 0.5), percentile(us, 0.99),
      *std::max_element(us.begin(), us.end()), rows, all_ok ? "true" : "false", nan_accepted ? "false" : "true",
      nan_held ? "true" : "false", size_refused ? "true" : "false",
      static_cast<unsigned long long>(policy.refused()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "policy_check: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  }
}
