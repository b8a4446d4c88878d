// rt_ablation: which of the policy library's real-time measures matter, measured (issue 18; the numbers
// and their reading are in README.md "Deployment" and docs/DESIGN.md §5.1). Prints one JSON object.
//
//   rt_ablation --policy P.pt [--obs OBS.f32] [--calls N] [--warmup N] [--rounds R] [--tmp-dir DIR]
//
// P is an exported TorchScript policy with an MLP actor (gail_robot.export). Every configuration below is
// the full setup with one measure removed, so a row reads "what this measure buys". Per configuration:
// after --warmup calls, heap allocations during --calls calls (alloc_counter.hpp: malloc & co. and every
// operator new on the calling thread), then --calls timed calls (p50 / p99 / max µs of one call) taken in
// --rounds round-robin chunks over all configurations, so a change of machine load hits every row alike;
// finally the actions of every row of OBS.f32 (zeros without it), compared with the full setup's.
//
// libtorch family. The library has no switch for most of these, so this file calls libtorch directly the
// way the library's interpreter backend does (torchscript.cpp, JitBackend: load, eval(), freeze without
// numerics changes, forward(inputs) inside the caller's flushed-denormal FP mode, output copied out):
//   full              input tensor preallocated once (from_blob over a fixed buffer, filled in place),
//                     the argument vector built once, c10::InferenceMode, frozen module, 1 intra-op thread;
//   no preallocation  a new at::empty input tensor and argument vector per call (the obvious code);
//   NoGradGuard       torch::NoGradGuard instead of InferenceMode;   no guard: neither;
//   unfrozen          eval() only (attribute lookups stay in the graph);
//   optimize_for_inference  torch::jit::optimize_for_inference on the frozen module;
//   static runtime    torch::jit::StaticModule on the frozen module (skipped, with the reason, if it fails);
//   default threads   at::set_num_threads(the count libtorch picked at start-up) around this row's calls
//                     (the library sets 1; inter-op stays 1, it can only be set once per process);
//   library           gail_robot::Policy with backend "libtorch": the library's own path, as a check that
//                     the direct full setup is what the library runs.
// native family (the library's own code: gail_robot::Policy, backend "native"): full (PolicyOptions
// defaults: denormals flushed inside act()) vs flush_denormals = false, on (a) P as given and (b) a copy of
// P made here whose first hidden-to-hidden Linear layer (the first one for a one-hidden-layer net) has its
// weights multiplied by 1e-38 (--denormal-scale): |w| <= ~0.06 becomes <= ~6e-40, below float32's smallest
// normal 1.18e-38, so every product x_k * w_kj of that layer has a denormal operand and result (the bias
// keeps the layer's outputs normal, so the actions barely change). That stands for weights that decayed
// towards zero; ordinary observations through ordinary weights make no denormals (tanh of a normal value
// is normal, and the normalisation clips), which the (a) rows show.
#include <gail_robot/policy.hpp>

#include <torch/csrc/jit/runtime/static/impl.h>
#include <torch/script.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define RT_ABLATION_MXCSR 1
#endif

#include "alloc_counter.hpp"
#include "bench_util.hpp"

namespace {

// Flush-to-zero and denormals-are-zero for one call, as gail_robot::Policy::act does around its backend.
class FlushDenormals {
 public:
  FlushDenormals() noexcept {
#ifdef RT_ABLATION_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040u);
#endif
  }
  ~FlushDenormals() {
#ifdef RT_ABLATION_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
};

enum class Guard { kInference, kNoGrad, kNone };
enum class Input { kPreallocated, kPerCall };
enum class ModuleKind { kFrozen, kUnfrozen, kOptimized, kStatic };

// The library's JitBackend with each measure a knob.
class DirectJit {
 public:
  DirectJit(const std::string& path, int obs_dim, int act_dim, ModuleKind kind, Input input, Guard guard)
      : obs_dim_(obs_dim), act_dim_(act_dim), input_(input), guard_(guard), buffer_(obs_dim, 0.0f) {
    module_ = torch::jit::load(path, torch::kCPU);
    module_.eval();
    if (kind != ModuleKind::kUnfrozen) module_ = torch::jit::freeze(module_, std::nullopt, /*optimize_numerics=*/false);
    if (kind == ModuleKind::kOptimized) module_ = torch::jit::optimize_for_inference(module_);
    if (kind == ModuleKind::kStatic) static_ = std::make_unique<torch::jit::StaticModule>(module_, /*is_frozen=*/true);
    inputs_.emplace_back(at::from_blob(buffer_.data(), {1, obs_dim}, at::kFloat));
  }

  void run(const float* obs, float* action) noexcept {
    try {
      FlushDenormals ftz;
      std::optional<c10::InferenceMode> inference;
      std::optional<torch::NoGradGuard> no_grad;
      if (guard_ == Guard::kInference) inference.emplace();
      else if (guard_ == Guard::kNoGrad) no_grad.emplace();
      at::Tensor out;
      if (input_ == Input::kPreallocated) {
        std::copy(obs, obs + obs_dim_, buffer_.data());
        out = forward(inputs_);
      } else {
        at::Tensor x = at::empty({1, obs_dim_}, at::kFloat);
        std::copy(obs, obs + obs_dim_, x.data_ptr<float>());
        out = forward(std::vector<c10::IValue>{x});
      }
      const float* p = out.data_ptr<float>();
      std::copy(p, p + act_dim_, action);
    } catch (...) {
      std::fill(action, action + act_dim_, NAN);
    }
  }

 private:
  at::Tensor forward(const std::vector<c10::IValue>& inputs) {
    // Module::forward takes its arguments by value: the library pays that copy too.
    return static_ ? (*static_)(inputs).toTensor() : module_.forward(inputs).toTensor();
  }

  int obs_dim_, act_dim_;
  Input input_;
  Guard guard_;
  std::vector<float> buffer_;
  torch::jit::Module module_;
  std::unique_ptr<torch::jit::StaticModule> static_;
  std::vector<c10::IValue> inputs_;
};

struct Config {
  std::string family, name, what, baseline;  // baseline: the name of the full setup it is compared with
  std::string backend;
  std::function<void(const float*, float*)> act;
  std::function<void()> enter = [] {}, leave = [] {};  // around every batch of calls (thread count)
  long allocations = 0;
  std::vector<double> us;
  std::vector<float> actions;
};

using gail_robot_tests::percentile;
using gail_robot_tests::read_floats;

std::string type_name(const torch::jit::Module& m) { return m.type()->name()->name(); }

// Writes a copy of `path` to `out` whose first hidden-to-hidden Linear (the only hidden one for a net with
// one hidden layer) has its weights multiplied by `scale`; returns how many weights are then denormal.
long write_denormal_copy(const std::string& path, const std::string& out, double scale, std::string* layer) {
  torch::jit::ExtraFilesMap extra{{"meta.json", ""}};
  torch::jit::Module module = torch::jit::load(path, torch::kCPU, extra);
  if (type_name(module) != "ExportedPolicy" || !module.hasattr("actor"))
    throw std::runtime_error(path + " is not gail_robot's ExportedPolicy");
  const torch::jit::Module actor = module.attr("actor").toModule();
  const std::string net = actor.hasattr("mean_net") ? "mean_net" : "net";
  std::vector<std::pair<std::string, torch::jit::Module>> linears;
  for (const auto& child : actor.attr(net).toModule().named_children())
    if (type_name(child.value) == "Linear") linears.emplace_back(child.name, child.value);
  if (linears.size() < 2) throw std::runtime_error(path + ": the actor has no hidden layer");
  const auto& [name, linear] = linears.size() > 2 ? linears[1] : linears[0];
  *layer = "actor." + net + "." + name;
  at::Tensor w = linear.attr("weight").toTensor();
  {
    torch::NoGradGuard no_grad;
    w.mul_(scale);
  }
  const at::Tensor a = w.abs();
  const long denormal = (a.lt(FLT_MIN) & a.gt(0.0f)).sum().item<int64_t>();
  module.save(out, extra);
  return denormal;
}

int run(int argc, char** argv) {
  // What libtorch would use on this machine: read before Policy::load sets one thread.
  const int default_threads = at::get_num_threads();
  std::string policy_path, obs_path, tmp_dir = std::filesystem::temp_directory_path().string();
  long calls = 10000, warmup = 500, rounds = 5;
  double denormal_scale = 1e-38;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--policy") policy_path = next();
    else if (a == "--obs") obs_path = next();
    else if (a == "--calls") calls = std::stol(next());
    else if (a == "--warmup") warmup = std::stol(next());
    else if (a == "--rounds") rounds = std::stol(next());
    else if (a == "--tmp-dir") tmp_dir = next();
    else if (a == "--denormal-scale") denormal_scale = std::stod(next());
    else throw std::runtime_error("unknown option '" + a + "'");
  }
  if (policy_path.empty() || calls < 1 || warmup < 0 || rounds < 1 || rounds > calls)
    throw std::runtime_error("--policy is required, --calls >= 1, --warmup >= 0, 1 <= --rounds <= --calls");

  gail_robot::PolicyOptions native_options;
  native_options.backend = "native";
  native_options.warmup_calls = 1;  // the warm-up below is the same for every configuration
  gail_robot::PolicyOptions native_unflushed = native_options;
  native_unflushed.flush_denormals = false;
  gail_robot::PolicyOptions library_options = native_options;
  library_options.backend = "libtorch";

  // Policy objects own their state; keep them alive for the whole run.
  std::vector<std::unique_ptr<gail_robot::Policy>> policies;
  auto policy_act = [&](const std::string& path, const gail_robot::PolicyOptions& options, std::string* backend) {
    policies.push_back(std::make_unique<gail_robot::Policy>(gail_robot::Policy::load(path, options)));
    gail_robot::Policy* p = policies.back().get();
    *backend = p->backend();
    return [p](const float* obs, float* action) { p->act(obs, action); };
  };

  std::vector<Config> configs;
  auto add = [&](std::string family, std::string name, std::string what, std::string baseline, std::string backend,
                 std::function<void(const float*, float*)> act) -> Config& {
    Config c;
    c.family = std::move(family), c.name = std::move(name), c.what = std::move(what);
    c.baseline = std::move(baseline), c.backend = std::move(backend), c.act = std::move(act);
    configs.push_back(std::move(c));
    return configs.back();
  };

  std::string backend;
  auto native_full = policy_act(policy_path, native_options, &backend);  // loads meta, checks the file
  const gail_robot::PolicyMeta meta = policies.back()->meta();
  const int obs_dim = meta.obs_dim, act_dim = meta.act_dim;
  std::vector<std::string> skipped;

  // libtorch family (direct calls, see the header).
  auto direct = [&](ModuleKind kind, Input input, Guard guard) {
    auto jit = std::make_shared<DirectJit>(policy_path, obs_dim, act_dim, kind, input, guard);
    return [jit](const float* obs, float* action) { jit->run(obs, action); };
  };
  const std::string lt = "libtorch full";
  add("libtorch", lt, "preallocated input, InferenceMode, frozen, 1 thread", lt, "libtorch-jit (direct)",
      direct(ModuleKind::kFrozen, Input::kPreallocated, Guard::kInference));
  add("libtorch", "no preallocation", "new input tensor + argument vector per call", lt, "libtorch-jit (direct)",
      direct(ModuleKind::kFrozen, Input::kPerCall, Guard::kInference));
  add("libtorch", "NoGradGuard", "torch::NoGradGuard instead of InferenceMode", lt, "libtorch-jit (direct)",
      direct(ModuleKind::kFrozen, Input::kPreallocated, Guard::kNoGrad));
  add("libtorch", "no guard", "neither InferenceMode nor NoGradGuard", lt, "libtorch-jit (direct)",
      direct(ModuleKind::kFrozen, Input::kPreallocated, Guard::kNone));
  add("libtorch", "unfrozen", "module.eval() only, not frozen", lt, "libtorch-jit (direct)",
      direct(ModuleKind::kUnfrozen, Input::kPreallocated, Guard::kInference));
  add("libtorch", "optimize_for_inference", "torch::jit::optimize_for_inference on the frozen module", lt,
      "libtorch-jit (direct)", direct(ModuleKind::kOptimized, Input::kPreallocated, Guard::kInference));
  try {
    add("libtorch", "static runtime", "torch::jit::StaticModule on the frozen module", lt, "libtorch-static (direct)",
        direct(ModuleKind::kStatic, Input::kPreallocated, Guard::kInference));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    skipped.push_back("static runtime: " + what.substr(0, what.find('\n')));
  }
  Config& threads = add("libtorch", "default threads",
                        std::to_string(default_threads) + " intra-op threads (libtorch's default here)", lt,
                        "libtorch-jit (direct)", direct(ModuleKind::kFrozen, Input::kPreallocated, Guard::kInference));
  threads.enter = [default_threads] { at::set_num_threads(default_threads); };
  threads.leave = [] { at::set_num_threads(1); };
  {
    auto act = policy_act(policy_path, library_options, &backend);
    add("libtorch", "library libtorch backend", "gail_robot::Policy, backend 'libtorch' (the library's path)", lt,
        backend, act);
  }

  // native family: the library itself.
  const std::string nf = "native full";
  add("native", nf, "gail_robot::Policy defaults: native kernels, denormals flushed", nf, "native-mlp", native_full);
  {
    auto act = policy_act(policy_path, native_unflushed, &backend);
    add("native", "denormals not flushed", "PolicyOptions::flush_denormals = false", nf, backend, act);
  }
  std::string denormal_layer;
  const std::string denormal_path =
      (std::filesystem::path(tmp_dir) / ("rt_ablation_denormal_" + std::to_string(getpid()) + ".pt")).string();
  const long denormal_weights = write_denormal_copy(policy_path, denormal_path, denormal_scale, &denormal_layer);
  {
    const std::string df = "denormal weights: native full";
    char scale_text[32];
    std::snprintf(scale_text, sizeof scale_text, "%g", denormal_scale);
    std::string b1, b2;
    auto full = policy_act(denormal_path, native_options, &b1);
    auto unflushed = policy_act(denormal_path, native_unflushed, &b2);
    std::filesystem::remove(denormal_path);
    add("native, denormal weights", df, denormal_layer + " weights x " + scale_text + ", flushed",
        df, b1, full);
    add("native, denormal weights", "denormal weights: not flushed", "the same, flush_denormals = false", df, b2,
        unflushed);
  }

  std::vector<float> obs = obs_path.empty() ? std::vector<float>(obs_dim, 0.0f) : read_floats(obs_path);
  if (obs.empty() || obs.size() % obs_dim != 0)
    throw std::runtime_error(obs_path + " does not hold rows of obs_dim floats");
  const std::size_t rows = obs.size() / obs_dim;
  auto row = [&](long i) { return obs.data() + (static_cast<std::size_t>(i) % rows) * obs_dim; };
  std::vector<float> action(act_dim);

  // Warm-up and allocation count, one configuration at a time.
  for (Config& c : configs) {
    c.enter();
    for (long i = 0; i < warmup; ++i) c.act(row(i), action.data());
    alloc_counter::AllocationCount counting;
    for (long i = 0; i < calls; ++i) c.act(row(i), action.data());
    c.allocations = counting.stop();
    c.leave();
  }
  // Timing: --rounds round-robin chunks (a few untimed calls after a thread-count switch).
  for (Config& c : configs) c.us.reserve(static_cast<std::size_t>(calls));
  for (long r = 0; r < rounds; ++r) {
    const long chunk = calls / rounds + (r < calls % rounds ? 1 : 0);
    for (Config& c : configs) {
      c.enter();
      for (long i = 0; i < 10; ++i) c.act(row(i), action.data());
      for (long i = 0; i < chunk; ++i) {
        const float* o = row(i);
        const auto t0 = std::chrono::steady_clock::now();
        c.act(o, action.data());
        c.us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
      c.leave();
    }
  }
  // Actions on every observation row.
  for (Config& c : configs) {
    c.actions.resize(rows * act_dim);
    c.enter();
    for (std::size_t r = 0; r < rows; ++r) c.act(obs.data() + r * obs_dim, c.actions.data() + r * act_dim);
    c.leave();
  }
  auto find = [&](const std::string& name) -> const Config& {
    for (const Config& c : configs)
      if (c.name == name) return c;
    throw std::logic_error("no configuration " + name);
  };
  auto max_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
    return worst;
  };

  std::printf("{\"policy\": \"%s\", \"env_id\": \"%s\", \"obs_dim\": %d, \"act_dim\": %d, \"calls\": %ld, "
              "\"warmup\": %ld, \"rounds\": %ld, \"rows\": %zu, \"default_threads\": %d, \"denormal_layer\": \"%s\", "
              "\"denormal_scale\": %g, \"denormal_weights\": %ld, \"native_vs_libtorch_max_diff\": %.9g, "
              "\"skipped\": [",
              policy_path.c_str(), meta.env_id.c_str(), obs_dim, act_dim, calls, warmup, rounds, rows,
              default_threads, denormal_layer.c_str(), denormal_scale, denormal_weights,
              max_diff(find(nf).actions, find(lt).actions));
  for (std::size_t i = 0; i < skipped.size(); ++i) {
    std::string s = skipped[i];
    for (char& ch : s)
      if (ch == '"' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20) ch = '\'';
    std::printf("%s\"%s\"", i ? ", " : "", s.c_str());
  }
  std::printf("], \"configs\": [");
  for (std::size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    std::printf("%s\n {\"family\": \"%s\", \"config\": \"%s\", \"what\": \"%s\", \"baseline\": \"%s\", "
                "\"backend\": \"%s\", \"calls\": %ld, \"allocations\": %ld, \"us_p50\": %.3f, \"us_p99\": %.3f, "
                "\"us_max\": %.3f, \"max_diff_vs_baseline\": %.9g}",
                i ? "," : "", c.family.c_str(), c.name.c_str(), c.what.c_str(), c.baseline.c_str(),
                c.backend.c_str(), calls, c.allocations, percentile(c.us, 0.5), percentile(c.us, 0.99),
                *std::max_element(c.us.begin(), c.us.end()), max_diff(c.actions, find(c.baseline).actions));
  }
  std::printf("]}\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "rt_ablation: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  }
}
