// An AOTInductor package (pt2) behind gail_robot::Policy (docs/DESIGN.md §5.1): the native kernels built
// from the weights the exporter stores beside the compiled module (extra/native_mlp.json and
// gail_robot/native_mlp.bin), checked against the AOTI module on the probe batch at load, as TorchScript
// files are checked against theirs. The fallback, for actors the kernels do not know or packages without
// the records, is libtorch's package runner, which allocates on every call (its outputs and the runner's
// tensor handles: 37-41 heap allocations per call for a 2x256 MLP), so Policy::allocation_free() is false
// then.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <stdexcept>

#include "libtorch_backend.hpp"
#include "native_mlp.hpp"

namespace gail_robot::detail {

namespace {

class AotiBackend final : public Backend {
 public:
  AotiBackend(std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader, int obs_dim, int act_dim)
      : loader_(std::move(loader)), act_dim_(act_dim) {
    inputs_.push_back(at::zeros({1, obs_dim}, at::kFloat));
  }
  const std::string& name() const noexcept override { return name_; }
  bool allocation_free() const noexcept override { return false; }
  bool run(const float* obs, float* action) noexcept override {
    try {
      c10::InferenceMode guard;
      std::copy(obs, obs + inputs_[0].numel(), inputs_[0].data_ptr<float>());
      const std::vector<at::Tensor> out = loader_->run(inputs_);
      const at::Tensor y = out.at(0).contiguous();
      std::copy(y.data_ptr<float>(), y.data_ptr<float>() + act_dim_, action);
      return true;
    } catch (...) {
      return false;
    }
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  int act_dim_;
  std::vector<at::Tensor> inputs_;
  std::string name_ = "libtorch-aoti";
};

}  // namespace

std::unique_ptr<Backend> load_pt2(const PolicyMeta& meta, const Archive& archive, const PolicyOptions& options) {
  // The records first: a corrupt blob is refused before libtorch unpacks and dlopens the package.
  std::string why_not;
  NativeMlpSpec spec;
  bool have_spec = false;
  if (options.backend != "libtorch") {
    if (archive.has_native_json)
      have_spec = native_spec_from_records(meta.path, archive.native_json,
                                           archive.has_native_blob ? &archive.native_blob : nullptr, meta.obs_dim,
                                           meta.act_dim, &spec, &why_not);
    else
      why_not = "the package carries no native weights (extra/native_mlp.json): re-export it";
  }
  single_threaded_libtorch();
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  try {
    // The package's model is named "model" by aoti_compile_and_package; one runner, CPU.
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(meta.path, "model", false, 1, -1);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw std::runtime_error(meta.path + ": libtorch cannot load this AOTInductor package (" +
                             what.substr(0, what.find('\n')) + ")");
  }
  const auto forward = [&](const at::Tensor& x) {
    std::vector<at::Tensor> in{x};
    return loader->run(in).at(0);
  };
  check_module_widths(meta, forward);
  if (have_spec) {
    auto native = std::make_unique<NativeBackend>(std::move(spec));
    double scale = 1.0;
    const double diff = max_probe_difference(native->mlp(), forward, meta, &scale);
    if (diff <= kProbeTolerance * scale) return native;  // the loader (and its runner) is released here
    why_not = "the native kernels differ from the module by " + std::to_string(diff) + " on the probe batch";
  }
  if (options.backend == "native")
    throw std::runtime_error(meta.path + ": cannot run allocation-free (" + why_not + ")");
  return std::make_unique<AotiBackend>(std::move(loader), meta.obs_dim, meta.act_dim);
}

}  // namespace gail_robot::detail
