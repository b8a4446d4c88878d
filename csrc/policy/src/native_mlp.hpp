// The allocation-free kernels: the exported module's arithmetic (docs/DESIGN.md §5) for an MLP actor, on
// buffers allocated once. No libtorch here: torchscript.cpp (from a module) and native_records.cpp (from a pt2
// package's records) build the spec.
#pragma once

#include <string>
#include <vector>

#include "backend.hpp"

namespace gail_robot::detail {

enum class Activation { kTanh, kRelu, kElu, kSilu };

struct NativeLayer {
  int n_in = 0, n_out = 0;
  std::vector<float> w;  // (n_in, n_out) row-major: the transpose of torch's Linear.weight
  std::vector<float> b;  // (n_out,)
};

// obs -> clip((obs - mean) / std, +-clip) in float64, rounded to float32 -> Linear/activation layers ->
// [tanh of the first act_dim outputs (a squashed actor)] -> clip to [-1, 1] -> low + (a + 1) / 2 * range,
// clipped to [low, high] in float32: the ops and order of ExportedPolicy.forward.
struct NativeMlpSpec {
  std::vector<double> obs_mean, obs_std;
  double obs_clip = 0.0;
  std::vector<NativeLayer> layers;
  std::vector<Activation> activations;  // after each hidden layer: layers.size() - 1 of them
  bool tanh_head = false;               // TanhGaussianActor: tanh(net(x)[:act_dim])
  std::vector<float> action_low, action_high, action_range;
};

class NativeMlp {
 public:
  explicit NativeMlp(NativeMlpSpec spec);  // checks every shape; throws std::runtime_error
  // One observation -> one action; touches only buffers allocated in the constructor.
  void run(const float* obs, float* action) noexcept;
  int obs_dim() const noexcept { return static_cast<int>(spec_.obs_mean.size()); }
  int act_dim() const noexcept { return static_cast<int>(spec_.action_low.size()); }

 private:
  NativeMlpSpec spec_;
  std::vector<float> h0_, h1_;  // ping-pong activations, as wide as the widest layer
};

// The Backend around a NativeMlp: what Policy runs for TorchScript files and pt2 packages whose actor
// the kernels reproduce (torchscript.cpp, pt2.cpp build the spec and check it against the module).
class NativeBackend final : public Backend {
 public:
  explicit NativeBackend(NativeMlpSpec spec) : mlp_(std::move(spec)) {}
  const std::string& name() const noexcept override { return name_; }
  bool allocation_free() const noexcept override { return true; }
  bool run(const float* obs, float* action) noexcept override {
    mlp_.run(obs, action);
    return true;
  }
  NativeMlp& mlp() { return mlp_; }

 private:
  NativeMlp mlp_;
  std::string name_ = "native-mlp";
};

// The spec of pt2 package's extra/native_mlp.json + gail_robot/native_mlp.bin (gail_robot/export/native.py).
// Returns false with *why_not set when the description says the actor is not a supported MLP; throws a
// one-line std::runtime_error (prefixed by `path`) for a missing, corrupt or mismatched blob.
bool native_spec_from_records(const std::string& path, const std::string& description, const std::string* blob,
                              int obs_dim, int act_dim, NativeMlpSpec* spec, std::string* why_not);

}  // namespace gail_robot::detail
