// An AOTInductor package (pt2) behind gail_robot::Policy: libtorch's package runner. It allocates on
// every call (its outputs and the runner's tensor handles: 37 heap allocations per call for a 2x256 MLP),
// so Policy::allocation_free() is false for pt2 files; TorchScript is the real-time format.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <stdexcept>

#include "libtorch_backend.hpp"

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

std::unique_ptr<Backend> load_pt2(const PolicyMeta& meta, const PolicyOptions& options) {
  if (options.backend == "native")
    throw std::runtime_error(meta.path + ": cannot run allocation-free (pt2 packages run through libtorch's "
                             "AOTInductor runner; export TorchScript for the native kernels)");
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
  check_module_widths(meta, [&](const at::Tensor& x) {
    std::vector<at::Tensor> in{x};
    return loader->run(in).at(0);
  });
  return std::make_unique<AotiBackend>(std::move(loader), meta.obs_dim, meta.act_dim);
}

}  // namespace gail_robot::detail
