// A TorchScript export behind gail_robot::Policy: the native kernels built from the module's own weights
// when its actor is an MLP they reproduce, else the libtorch interpreter (docs/DESIGN.md §5).
//
// Why not always libtorch: every TorchScript call allocates, whatever the setup. Measured by rt_ablation
// (csrc/policy/tests/; README.md "Deployment") for 2x256 MLPs: 94 heap allocations per call through
// JitBackend below (frozen, InferenceMode, preallocated input, one thread), 94 unfrozen, 98 with a new
// input tensor per call, 111 with NoGradGuard or no guard, 85 with optimize_for_inference, 58 with the
// static runtime; ~65-80 us per call against ~9-18 us for the native kernels. The native copy is checked
// against the module on a probe batch at load, so a module it would misrepresent falls back (or is
// refused with backend "native").
#include <torch/script.h>

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "libtorch_backend.hpp"
#include "native_mlp.hpp"

namespace gail_robot::detail {

namespace {

std::string type_name(const torch::jit::Module& m) { return m.type()->name()->name(); }

std::vector<float> floats(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<double> doubles(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// The ExportedPolicy wrapper around a GaussianActor (mean_net) or TanhGaussianActor (net + tanh head)
// whose network is Linear layers with tanh/relu/elu(alpha 1)/silu between them; else a reason why not.
NativeMlpSpec native_spec(const torch::jit::Module& module, std::string* why_not) {
  NativeMlpSpec spec;
  if (type_name(module) != "ExportedPolicy" || !module.hasattr("actor")) {
    *why_not = "the module is not gail_robot's ExportedPolicy";
    return spec;
  }
  const torch::jit::Module actor = module.attr("actor").toModule();
  const std::string kind = type_name(actor);
  std::string net_name;
  if (kind == "GaussianActor") net_name = "mean_net";
  else if (kind == "TanhGaussianActor") net_name = "net", spec.tanh_head = true;
  else {
    *why_not = "actor " + kind + " is not an MLP actor the native kernels know";
    return spec;
  }
  for (const auto& child : actor.attr(net_name).toModule().named_children()) {
    const std::string t = type_name(child.value);
    const bool expect_linear = spec.layers.size() == spec.activations.size();
    if (expect_linear && t == "Linear") {
      const at::Tensor w = child.value.attr("weight").toTensor();  // (out, in)
      NativeLayer layer;
      layer.n_out = static_cast<int>(w.size(0));
      layer.n_in = static_cast<int>(w.size(1));
      layer.w = floats(w.t());  // (in, out)
      const c10::IValue bias = child.value.attr("bias");
      layer.b = bias.isTensor() ? floats(bias.toTensor()) : std::vector<float>(layer.n_out, 0.0f);
      spec.layers.push_back(std::move(layer));
    } else if (!expect_linear && t == "Tanh") {
      spec.activations.push_back(Activation::kTanh);
    } else if (!expect_linear && t == "ReLU") {
      spec.activations.push_back(Activation::kRelu);
    } else if (!expect_linear && t == "ELU" && child.value.attr("alpha").toDouble() == 1.0) {
      spec.activations.push_back(Activation::kElu);
    } else if (!expect_linear && t == "SiLU") {
      spec.activations.push_back(Activation::kSilu);
    } else {
      *why_not = "layer " + child.name + " (" + t + ") of the actor is not supported by the native kernels";
      return spec;
    }
  }
  spec.obs_mean = doubles(module.attr("obs_mean").toTensor());
  spec.obs_std = doubles(module.attr("obs_std").toTensor());
  spec.obs_clip = module.attr("obs_clip").toDouble();
  spec.action_low = floats(module.attr("action_low").toTensor());
  spec.action_high = floats(module.attr("action_high").toTensor());
  spec.action_range = floats(module.attr("action_range").toTensor());
  return spec;
}

// The TorchScript interpreter on a frozen module, one preallocated input tensor filled in place, under
// InferenceMode (NoGradGuard costs 17 more allocations per call and ~6-10 % more time, measured above).
class JitBackend final : public Backend {
 public:
  JitBackend(torch::jit::Module module, int obs_dim, int act_dim)
      : module_(std::move(module)), act_dim_(act_dim) {
    input_ = at::zeros({1, obs_dim}, at::kFloat);
    inputs_.emplace_back(input_);
  }
  const std::string& name() const noexcept override { return name_; }
  bool allocation_free() const noexcept override { return false; }
  bool run(const float* obs, float* action) noexcept override {
    try {
      c10::InferenceMode guard;
      std::copy(obs, obs + input_.numel(), input_.data_ptr<float>());
      const at::Tensor out = module_.forward(inputs_).toTensor();
      const float* p = out.data_ptr<float>();
      std::copy(p, p + act_dim_, action);
      return true;
    } catch (...) {
      return false;
    }
  }

 private:
  torch::jit::Module module_;
  int act_dim_;
  at::Tensor input_;
  std::vector<c10::IValue> inputs_;
  std::string name_ = "libtorch-jit";
};

}  // namespace

std::unique_ptr<Backend> load_torchscript(const PolicyMeta& meta, const PolicyOptions& options) {
  single_threaded_libtorch();
  torch::jit::Module module;
  try {
    module = torch::jit::load(meta.path, torch::kCPU);
  } catch (const std::exception&) {
    throw std::runtime_error(meta.path + " is corrupt (libtorch cannot load its TorchScript module)");
  }
  module.eval();
  if (module.hasattr("obs_dim") && module.attr("obs_dim").isInt() && module.attr("obs_dim").toInt() != meta.obs_dim)
    throw std::runtime_error(meta.path + ": the module takes " + std::to_string(module.attr("obs_dim").toInt()) +
                             " observations, meta.json says obs_dim " + std::to_string(meta.obs_dim) +
                             " (mismatched file)");
  check_module_widths(meta, [&](const at::Tensor& x) { return module.forward({x}).toTensor(); });
  if (options.backend != "libtorch") {
    std::string why_not;
    NativeMlpSpec spec = native_spec(module, &why_not);
    if (why_not.empty()) {
      auto native = std::make_unique<NativeBackend>(std::move(spec));
      double scale = 1.0;
      const double diff = max_probe_difference(
          native->mlp(), [&](const at::Tensor& x) { return module.forward({x}).toTensor(); }, meta, &scale);
      if (diff <= kProbeTolerance * scale) return native;
      why_not = "the native kernels differ from the module by " + std::to_string(diff) + " on the probe batch";
    }
    if (options.backend == "native")
      throw std::runtime_error(meta.path + ": cannot run allocation-free (" + why_not + ")");
  }
  // Inline the weights as constants; numerics are unchanged. Measured (rt_ablation), freezing saves neither
  // allocations nor time for these MLPs; it is kept because it costs nothing per call. optimize_for_inference
  // would save 9 allocations and ~15-20 % of p50 but changes float32 results (~1e-7), which would end
  // --backend libtorch's bit-identity with Python's forward (docs/DESIGN.md §5.1).
  module = torch::jit::freeze(module, std::nullopt, /*optimize_numerics=*/false);
  return std::make_unique<JitBackend>(std::move(module), meta.obs_dim, meta.act_dim);
}

}  // namespace gail_robot::detail
