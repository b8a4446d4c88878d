// gail_robot::policy: run an exported gail_robot policy (TorchScript or AOTInductor pt2) from C++.
//
//   auto policy = gail_robot::Policy::load("hopper.pt");      // throws std::runtime_error, one line
//   std::vector<float> obs(policy.obs_dim()), action(policy.act_dim());
//   ... in the control loop:
//   policy.act(obs.data(), action.data());                    // noexcept, no heap allocation
//
// The file is the whole policy (docs/DESIGN.md §5): raw observation float32 in, action float32 in the
// env's units out, clipped to its bounds; meta.json travels inside it. This header needs no libtorch:
// the library links libtorch privately (see csrc/controller/README.md, "The policy library").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

#include <gail_robot/json.hpp>

namespace gail_robot {

// The newest meta.json "format_version" this library reads (gail_robot.export.formats.META_FORMAT_VERSION).
constexpr int kPolicyFormatVersion = 1;

// One slice of an mjData array copied into the observation (meta.json "observation_layout").
struct ObservationSegment {
  std::string field;  // qpos, qvel, cinert, cvel, qfrc_actuator or cfrc_ext
  int offset = 0;
  int size = 0;
  bool clip = false;
  double clip_low = 0.0, clip_high = 0.0;  // meaningful when clip
};

// The parsed meta.json. Infinite bounds (written as null) are +-infinity here.
struct PolicyMeta {
  std::string path;           // the file it was read from
  std::string module_format;  // "torchscript" or "pt2" (checked against the file's contents)
  int format_version = 0;
  std::string env_id;
  int obs_dim = 0, act_dim = 0;
  double dt = 0.0;        // control timestep (s)
  int frame_skip = 1;     // physics steps per control step
  double timestep = 0.0;  // physics timestep (s)
  std::vector<double> action_low, action_high, obs_low, obs_high;
  std::vector<ObservationSegment> observation_layout;  // empty: the env has no C++ observation builder
  json::Value raw;  // everything else (env_kwargs, task rules, training provenance, versions)
};

struct PolicyOptions {
  // "auto": the allocation-free native kernels when they reproduce the module, else libtorch (the
  // interpreter or AOTInductor runner, which allocate on every call). "native" refuses to load a policy
  // the kernels cannot run; "libtorch" forces the libtorch path (for comparisons).
  std::string backend = "auto";
  // Calls made inside load() so that the first act() is already in steady state.
  int warmup_calls = 50;
  // Flush denormals to zero inside act() (the caller's FP mode is restored on return; x86 only).
  bool flush_denormals = true;
};

class Policy {
 public:
  // Loads `path`; the format is chosen by the file's contents, not its name. Sets libtorch to one
  // intra-op and one inter-op thread (process-wide). Throws std::runtime_error with one line for a
  // missing, corrupt, foreign or mismatched file, or a file from a newer format version.
  static Policy load(const std::string& path, const PolicyOptions& options = {});

  Policy(Policy&&) noexcept;
  Policy& operator=(Policy&&) noexcept;
  ~Policy();

  int obs_dim() const noexcept;
  int act_dim() const noexcept;
  const PolicyMeta& meta() const noexcept;
  // "native-mlp", "libtorch-jit" (TorchScript interpreter) or "libtorch-aoti" (pt2 runner).
  const std::string& backend() const noexcept;
  // True when act() makes no heap allocation after load() (the native kernels).
  bool allocation_free() const noexcept;

  // Writes the action for `obs` (obs_dim floats) into `action` (act_dim floats) and returns true.
  // An observation with a NaN or infinity, or a module output that is not finite, is refused: the
  // last good action is written again (the middle of the action bounds before any) and it returns
  // false. A NaN never reaches the actuators.
  bool act(const float* obs, float* action) noexcept;
  // Size-checked form: a size mismatch is refused like a NaN observation.
  bool act(const float* obs, std::size_t obs_size, float* action, std::size_t action_size) noexcept;
#if __cplusplus >= 202002L
  bool act(std::span<const float> obs, std::span<float> action) noexcept {
    return act(obs.data(), obs.size(), action.data(), action.size());
  }
#endif

  // Forget the held action (back to the middle of the bounds) and the refusal count.
  void reset() noexcept;
  // Observations refused since load() or reset().
  std::uint64_t refused() const noexcept;

 private:
  struct Impl;
  explicit Policy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gail_robot
