// gail-robot-controller: closes the loop between an exported gail_robot policy (run by the gail_robot::policy
// library) and a MuJoCo model (C API), the way a robot controller would, and prints one JSON object.
//
//   gail-robot-controller --policy policy.pt --model hopper.xml --steps 1000
//                         [--state-file S.txt | --init-qpos Q.txt --init-qvel V.txt]
//                         [--actions-out A.txt] [--obs-out O.txt] [--no-terminate] [--realtime]
//                         [--warmup N] [--seed S --reset-noise X] [--backend auto|native|libtorch]
//                         [--realtime [--spin]] [--cpu N] [--rt-priority P]
//
// --realtime paces the loop at the control timestep (sleeping, or busy-waiting with --spin); --cpu
// pins the control thread to one core and --rt-priority P asks for SCHED_FIFO priority P with the
// process memory locked (needs CAP_SYS_NICE / root): what a robot's control thread would do.
//
// Real-time habits: everything is loaded and warmed up before the loop (gail_robot::Policy::load does the
// policy's part: see its header); no allocation or I/O inside the loop other than the optional
// --actions-out/--obs-out logs, which are buffered and written after the loop. realtime_loop.cpp is the
// fixed-rate template for a robot's own loop.
#include <mujoco/mujoco.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gail_robot/policy.hpp>
#include "locomotion.hpp"
#include "scheduling.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string policy, model, state_file, init_qpos, init_qvel, actions_out, obs_out;
  long steps = 1000;
  int warmup = 200;
  bool terminate = true;
  bool realtime = false;
  std::string backend = "auto";
  bool spin = false;
  int cpu = -1;
  int rt_priority = 0;
  unsigned seed = 0;
  double reset_noise = 0.0;
};

const char* kUsage =
    "usage: gail-robot-controller --policy POLICY.pt --model MODEL.xml [--steps N] [--warmup N]\n"
    "         [--state-file FILE | --init-qpos FILE --init-qvel FILE] [--seed S --reset-noise X]\n"
    "         [--actions-out FILE] [--obs-out FILE] [--no-terminate] [--backend auto|native|libtorch]\n"
    "         [--realtime [--spin]] [--cpu N] [--rt-priority P]\n";

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--policy") o.policy = next();
    else if (a == "--model") o.model = next();
    else if (a == "--steps") o.steps = std::stol(next());
    else if (a == "--warmup") o.warmup = std::stoi(next());
    else if (a == "--state-file") o.state_file = next();
    else if (a == "--init-qpos") o.init_qpos = next();
    else if (a == "--init-qvel") o.init_qvel = next();
    else if (a == "--actions-out") o.actions_out = next();
    else if (a == "--obs-out") o.obs_out = next();
    else if (a == "--seed") o.seed = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--reset-noise") o.reset_noise = std::stod(next());
    else if (a == "--no-terminate") o.terminate = false;
    else if (a == "--realtime") o.realtime = true;
    else if (a == "--backend") o.backend = next();
    else if (a == "--spin") o.spin = true;
    else if (a == "--cpu") o.cpu = std::stoi(next());
    else if (a == "--rt-priority") o.rt_priority = std::stoi(next());
    else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      throw std::runtime_error("unknown option '" + a + "'");
    }
  }
  if (o.policy.empty() || o.model.empty()) throw std::runtime_error("--policy and --model are required");
  if (o.steps < 1) throw std::runtime_error("--steps must be >= 1");
  if (o.warmup < 1) throw std::runtime_error("--warmup must be >= 1");
  if (!o.state_file.empty() && (!o.init_qpos.empty() || !o.init_qvel.empty()))
    throw std::runtime_error("use either --state-file or --init-qpos/--init-qvel, not both");
  return o;
}

// Whitespace/comma separated numbers (the format numpy.savetxt writes).
std::vector<double> read_numbers(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<double> out;
  std::string tok;
  while (in >> tok) {
    std::replace(tok.begin(), tok.end(), ',', ' ');
    std::istringstream ss(tok);
    double v;
    while (ss >> v) out.push_back(v);
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

struct ModelHandle {
  mjModel* m = nullptr;
  mjData* d = nullptr;
  ModelHandle() = default;
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;
  ~ModelHandle() {
    if (d) mj_deleteData(d);
    if (m) mj_deleteModel(m);
  }
};

// MuJoCo prints warnings to stdout by default; stdout carries the JSON report, so send them to stderr.
void warning_to_stderr(const char* msg) { std::fprintf(stderr, "MuJoCo warning: %s\n", msg); }

// The model and the policy must describe the same robot at the same control rate.
void check_model(const mjModel* m, const gail_robot::PolicyMeta& meta, int act_dim, double dt) {
  if (m->nu != act_dim)
    throw std::runtime_error("model has " + std::to_string(m->nu) + " actuators, the policy outputs " +
                             std::to_string(act_dim) + " actions (wrong --model?)");
  if (meta.dt > 0 && std::abs(meta.dt - dt) > 1e-9)
    throw std::runtime_error("model timestep x frame_skip = " + std::to_string(dt) +
                             " s differs from the policy's control timestep " + std::to_string(meta.dt) +
                             " s (wrong --model?)");
}

// Initial state: a full mjSTATE_INTEGRATION state, or qpos/qvel (default qpos0 / zero, optionally
// with uniform noise from our own RNG: not NumPy's stream), then mj_forward as Gymnasium's set_state.
void set_initial_state(const mjModel* m, mjData* d, const Options& opt) {
  mj_resetData(m, d);
  if (!opt.state_file.empty()) {
    std::vector<double> state = read_numbers(opt.state_file);
    const int size = mj_stateSize(m, mjSTATE_INTEGRATION);
    if (static_cast<int>(state.size()) != size)
      throw std::runtime_error(opt.state_file + " holds " + std::to_string(state.size()) +
                               " numbers, the mjSTATE_INTEGRATION state of this model has " +
                               std::to_string(size));
    mj_setState(m, d, state.data(), mjSTATE_INTEGRATION);
  } else {
    std::mt19937 rng(opt.seed);
    std::uniform_real_distribution<double> noise(-opt.reset_noise, opt.reset_noise);
    for (int i = 0; i < m->nq; ++i) d->qpos[i] = m->qpos0[i] + (opt.reset_noise > 0 ? noise(rng) : 0.0);
    for (int i = 0; i < m->nv; ++i) d->qvel[i] = opt.reset_noise > 0 ? noise(rng) : 0.0;
    auto read_exact = [](const std::string& path, int n, const char* what) {
      std::vector<double> v = read_numbers(path);
      if (static_cast<int>(v.size()) != n)
        throw std::runtime_error(std::string(what) + " needs " + std::to_string(n) + " numbers, " + path +
                                 " holds " + std::to_string(v.size()));
      return v;
    };
    if (!opt.init_qpos.empty()) {
      std::vector<double> q = read_exact(opt.init_qpos, m->nq, "--init-qpos (nq)");
      std::copy(q.begin(), q.end(), d->qpos);
    }
    if (!opt.init_qvel.empty()) {
      std::vector<double> v = read_exact(opt.init_qvel, m->nv, "--init-qvel (nv)");
      std::copy(v.begin(), v.end(), d->qvel);
    }
  }
  mj_forward(m, d);
}

// A JSON string literal's contents (env ids are plain, but the report must stay valid JSON regardless).
std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out.push_back(c);
  }
  return out;
}

// Rows of `cols` numbers; %.9g round-trips float32 exactly.
void write_rows(const std::string& path, const std::vector<float>& values, int cols) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  for (size_t i = 0; i < values.size(); ++i)
    std::fprintf(f, "%.9g%c", static_cast<double>(values[i]),
                 (i + 1) % static_cast<size_t>(cols) == 0 ? '\n' : ' ');
  std::fclose(f);
}

int run(const Options& opt) {
  mju_user_warning = warning_to_stderr;

  // ---- load everything before the loop ------------------------------------------------------------
  gail_robot::PolicyOptions policy_options;
  policy_options.backend = opt.backend;
  policy_options.warmup_calls = opt.warmup;
  gail_robot::Policy policy = gail_robot::Policy::load(opt.policy, policy_options);
  const gail_robot::PolicyMeta& meta = policy.meta();
  const int obs_dim = policy.obs_dim();
  const int act_dim = policy.act_dim();
  const int frame_skip = meta.frame_skip;

  ModelHandle h;
  char err[1000] = "";
  h.m = mj_loadXML(opt.model.c_str(), nullptr, err, sizeof(err));
  if (!h.m) throw std::runtime_error("cannot load model " + opt.model + ": " + err);
  h.d = mj_makeData(h.m);
  mjModel* m = h.m;
  mjData* d = h.d;
  const double dt = m->opt.timestep * frame_skip;
  check_model(m, meta, act_dim, dt);
  gail_robot::ObservationBuilder observe(m, meta.raw.at("observation_layout"), obs_dim);
  gail_robot::LocomotionTask task(m, meta.raw.at("task"));
  set_initial_state(m, d, opt);

  // ---- buffers and warm-up ------------------------------------------------------------------------
  std::vector<float> observation(static_cast<std::size_t>(obs_dim));
  float* input_ptr = observation.data();
  std::vector<float> action(static_cast<std::size_t>(act_dim));
  // Warm up on the real first observation too (load() warmed up on the normalisation mean).
  observe.build(d, input_ptr);
  for (int i = 0; i < opt.warmup; ++i) policy.act(input_ptr, action.data());
  policy.reset();

  std::vector<double> infer_us;
  infer_us.reserve(static_cast<size_t>(opt.steps));
  std::vector<float> action_log, obs_log;
  if (!opt.actions_out.empty()) action_log.reserve(static_cast<size_t>(opt.steps * act_dim));
  if (!opt.obs_out.empty()) obs_log.reserve(static_cast<size_t>(opt.steps * obs_dim));
  gail_robot::apply_scheduling(opt.cpu, opt.rt_priority);

  // ---- the control loop ---------------------------------------------------------------------------
  double episode_return = 0.0;
  bool fell = false;
  long steps = 0;
  const auto loop_start = Clock::now();
  auto next_tick = loop_start;
  const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(dt));
  for (; steps < opt.steps; ++steps) {
    observe.build(d, input_ptr);
    if (!opt.obs_out.empty()) obs_log.insert(obs_log.end(), input_ptr, input_ptr + obs_dim);

    const auto t0 = Clock::now();
    // A non-finite observation is refused and the last action held (policy.refused() counts them).
    policy.act(input_ptr, action.data());
    const auto t1 = Clock::now();
    infer_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());

    if (!opt.actions_out.empty()) action_log.insert(action_log.end(), action.begin(), action.end());
    task.before_step(d);
    for (int i = 0; i < act_dim; ++i) d->ctrl[i] = static_cast<mjtNum>(action[static_cast<size_t>(i)]);
    for (int k = 0; k < frame_skip; ++k) mj_step(m, d);
    // As Gymnasium does after stepping: cfrc_ext/cacc are not computed by mj_step without force sensors.
    mj_rnePostConstraint(m, d);
    episode_return += task.reward(d, action.data(), act_dim, dt);
    if (task.terminated(d)) {
      fell = true;
      if (opt.terminate) {
        ++steps;
        break;
      }
    }
    if (opt.realtime) {
      next_tick += period;
      if (opt.spin) {
        // Busy-wait: the core never sleeps (and is never handed to another process while idle), at
        // the price of a whole core, as dedicated real-time control threads do.
        while (Clock::now() < next_tick) {
        }
      } else {
        std::this_thread::sleep_until(next_tick);
      }
    }
  }
  const double loop_s = std::chrono::duration<double>(Clock::now() - loop_start).count();

  // ---- logs and the report ------------------------------------------------------------------------
  if (!opt.actions_out.empty()) write_rows(opt.actions_out, action_log, act_dim);
  if (!opt.obs_out.empty()) write_rows(opt.obs_out, obs_log, obs_dim);
  const std::string env_id = json_escape(meta.env_id);
  std::printf(
      "{\"env_id\": \"%s\", \"steps\": %ld, \"return\": %.10g, \"fell\": %s, \"infer_us_p50\": %.3f, "
      "\"infer_us_p99\": %.3f, \"infer_us_max\": %.3f, \"loop_hz\": %.1f, \"dt\": %.6g, \"realtime\": %s, "
      "\"backend\": \"%s\", \"refused\": %llu}\n",
      env_id.c_str(), steps, episode_return, fell ? "true" : "false", percentile(infer_us, 0.5),
      percentile(infer_us, 0.99), *std::max_element(infer_us.begin(), infer_us.end()),
      static_cast<double>(steps) / loop_s, dt, opt.realtime ? "true" : "false", policy.backend().c_str(),
      static_cast<unsigned long long>(policy.refused()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::string what = e.what();
    // Keep the first line only (libtorch errors carry a backtrace after it).
    what = what.substr(0, what.find('\n'));
    std::fprintf(stderr, "gail-robot-controller: error: %s\n", what.c_str());
    return 2;
  }
}
