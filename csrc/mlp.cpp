// The rollout policy's MLP forward pass (Linear layers with an activation between them), row by row.
//
// Why not NumPy's matmul: BLAS picks different kernels (and summation orders) for different batch sizes, so
// the same observation row gives a different action in a 2-env slice than in an 8-env batch. The on-policy
// rollouts must be bit-identical whatever the vectorisation (in-process, worker processes, Ray actors on other
// machines; docs/DESIGN.md §9), so every output is computed here in one fixed order that depends on nothing but
// the row itself:  out[j] = b[j] + x[0] * W[0, j] + x[1] * W[1, j] + ...  (float32, left to right, no FMA:
// -ffp-contract=off). The loop over j is independent per output, so it vectorises without reordering any sum.
#include <cmath>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "common.h"

namespace gail_robot {
namespace {

enum class Activation { kTanh, kRelu, kElu, kSilu };

Activation parse_activation(const std::string& name) {
  if (name == "tanh") return Activation::kTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "elu") return Activation::kElu;
  if (name == "silu") return Activation::kSilu;
  throw py::value_error("activation should be tanh, relu, elu or silu, got '" + name + "'");
}

// One Linear layer for one row: out = b + sum_k x[k] * W[k, :] in increasing k.
GAIL_ROBOT_SIMD_CLONES
void linear_row(const float* __restrict x, const float* __restrict w, const float* __restrict b, std::size_t n_in,
                std::size_t n_out, float* __restrict out) {
  for (std::size_t j = 0; j < n_out; ++j) out[j] = b[j];
  for (std::size_t k = 0; k < n_in; ++k) {
    const float xk = x[k];
    const float* __restrict wk = w + k * n_out;
    for (std::size_t j = 0; j < n_out; ++j) out[j] += xk * wk[j];
  }
}

void activate(Activation act, float* h, std::size_t n) {
  switch (act) {
    case Activation::kTanh:
      for (std::size_t j = 0; j < n; ++j) h[j] = std::tanh(h[j]);
      break;
    case Activation::kRelu:
      for (std::size_t j = 0; j < n; ++j) h[j] = h[j] > 0.0f ? h[j] : 0.0f;
      break;
    case Activation::kElu:
      for (std::size_t j = 0; j < n; ++j) h[j] = h[j] > 0.0f ? h[j] : std::expm1(h[j]);
      break;
    case Activation::kSilu:
      for (std::size_t j = 0; j < n; ++j) h[j] = h[j] / (1.0f + std::exp(-h[j]));
      break;
  }
}

void mlp_forward_binding(const CArray<float>& x, const py::list& weights, const py::list& biases,
                         const std::vector<std::string>& activations, CArray<float>& out) {
  check_ndim("x", x.ndim(), 2);
  const std::size_t layers = weights.size();
  if (layers == 0) throw py::value_error("weights should hold at least one layer");
  check_size("biases", static_cast<py::ssize_t>(biases.size()), static_cast<py::ssize_t>(layers));
  check_size("activations", static_cast<py::ssize_t>(activations.size()), static_cast<py::ssize_t>(layers - 1));
  std::vector<Activation> acts;
  for (const auto& name : activations) acts.push_back(parse_activation(name));
  // Keep the arrays alive (and their pointers valid) while the GIL is released.
  std::vector<CArray<float>> ws, bs;
  std::vector<std::size_t> widths{static_cast<std::size_t>(x.shape(1))};
  for (std::size_t l = 0; l < layers; ++l) {
    ws.push_back(weights[l].cast<CArray<float>>());
    bs.push_back(biases[l].cast<CArray<float>>());
    const std::string name = "weights[" + std::to_string(l) + "]";
    check_ndim(name.c_str(), ws[l].ndim(), 2);
    check_size((name + ".shape[0]").c_str(), ws[l].shape(0), static_cast<py::ssize_t>(widths.back()));
    check_size(("biases[" + std::to_string(l) + "]").c_str(), bs[l].size(), ws[l].shape(1));
    widths.push_back(static_cast<std::size_t>(ws[l].shape(1)));
  }
  const std::size_t rows = static_cast<std::size_t>(x.shape(0));
  check_size("out", out.size(), static_cast<py::ssize_t>(rows * widths.back()));
  std::vector<const float*> w_ptr, b_ptr;
  for (std::size_t l = 0; l < layers; ++l) {
    w_ptr.push_back(ws[l].data());
    b_ptr.push_back(bs[l].data());
  }
  const float* xs = x.data();
  float* ys = out.mutable_data();
  std::size_t widest = 0;
  for (std::size_t width : widths) widest = std::max(widest, width);
  py::gil_scoped_release release;
  constexpr std::size_t kMinRowsPerThread = 256;
  parallel_for(rows, 1, kMinRowsPerThread, [&](std::size_t r0, std::size_t r1) {
    std::vector<float> a(widest), b(widest);
    for (std::size_t r = r0; r < r1; ++r) {
      const float* in = xs + r * widths[0];
      for (std::size_t l = 0; l < layers; ++l) {
        float* dst = l + 1 == layers ? ys + r * widths.back() : (l % 2 == 0 ? a.data() : b.data());
        linear_row(in, w_ptr[l], b_ptr[l], widths[l], widths[l + 1], dst);
        if (l + 1 < layers) activate(acts[l], dst, widths[l + 1]);
        in = dst;
      }
    }
  });
}

}  // namespace

void register_mlp(py::module_& m) {
  m.def("mlp_forward_f32", &mlp_forward_binding, py::arg("x").noconvert(), py::arg("weights"), py::arg("biases"),
        py::arg("activations"), py::arg("out").noconvert(),
        "out = Linear_L(act(... act(Linear_1(x)))) per row in a fixed summation order; W_l is (in, out).");
}

}  // namespace gail_robot
