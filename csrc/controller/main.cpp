// gail-robot-controller: closes the loop between an exported gail_robot policy (run by the gail_robot::policy
// library) and a MuJoCo model (C API), the way a robot controller would, and prints one JSON object.
//
//   gail-robot-controller --policy policy.pt --model hopper.xml [--steps N] [--episodes N]
//                         [--state-file S.txt | --init-qpos Q.txt --init-qvel V.txt]
//                         [--actions-out A.txt] [--obs-out O.txt] [--states-out X.txt] [--no-terminate]
//                         [--warmup N] [--seed S --reset-noise X] [--backend auto|native|libtorch]
//                         [--realtime [--spin]] [--cpu N] [--rt-priority P]
//
// Tasks: the Gymnasium v5 walkers (locomotion.cpp) and the project's arm tasks (arm.cpp: observation,
// Cartesian controller, reset sampling, reward, success), chosen by meta.json's task "family". Each of
// the --episodes starts from one row of --state-file (one mjSTATE_INTEGRATION state per episode, or one
// for all) or from the task's own reset (walkers: qpos0 / zero qvel with --reset-noise; arm tasks: the
// env's cube and goal distributions), both drawn from --seed with our own RNG, not NumPy's stream. An
// episode ends at --steps (default: the env's time limit in meta.json, else 1000) or when the task
// terminates (a fall; an arm task's success when the env terminates on success) unless --no-terminate.
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
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gail_robot/policy.hpp>
#include "arm.hpp"
#include "locomotion.hpp"
#include "scheduling.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string policy, model, state_file, init_qpos, init_qvel, actions_out, obs_out, states_out;
  long steps = 0;  // 0: the env's time limit (meta.json task max_episode_steps), else 1000
  long episodes = 1;
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
    "usage: gail-robot-controller --policy POLICY.pt --model MODEL.xml [--steps N] [--episodes N]\n"
    "         [--warmup N] [--state-file FILE | --init-qpos FILE --init-qvel FILE] [--seed S --reset-noise X]\n"
    "         [--actions-out FILE] [--obs-out FILE] [--states-out FILE] [--no-terminate]\n"
    "         [--backend auto|native|libtorch]\n"
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
    else if (a == "--steps") {
      o.steps = std::stol(next());
      if (o.steps < 1) throw std::runtime_error("--steps must be >= 1");
    }
    else if (a == "--episodes") o.episodes = std::stol(next());
    else if (a == "--states-out") o.states_out = next();
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
  if (o.episodes < 1) throw std::runtime_error("--episodes must be >= 1");
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

// One closed-loop task: what the controller needs per episode and per control step.
class LoopTask {
 public:
  virtual ~LoopTask() = default;
  // The task's own initial state for episode `episode` (no --state-file), after mj_resetData.
  virtual void reset(mjData* d, std::mt19937_64& rng) = 0;
  virtual void observe(const mjData* d, float* obs) = 0;
  // Applies `action` for one control step; returns the step's reward and sets the step's outcome.
  virtual double step(mjData* d, const float* action, bool* terminated, bool* success) = 0;
  // The env's time limit (0: unknown) and whether the task reports success (arm tasks).
  virtual int max_episode_steps() const = 0;
  virtual bool has_success() const = 0;
};

// Gymnasium's v5 walkers: the layout-driven observation, ctrl = action, frame_skip mj_step, v5 rules.
class WalkerTask : public LoopTask {
 public:
  WalkerTask(const mjModel* m, const gail_robot::PolicyMeta& meta, int obs_dim, int act_dim, const Options& opt)
      : m_(m),
        observe_(m, meta.raw.at("observation_layout"), obs_dim),
        task_(m, meta.raw.at("task")),
        act_dim_(act_dim),
        frame_skip_(meta.frame_skip),
        dt_(m->opt.timestep * meta.frame_skip),
        noise_(opt.reset_noise) {
    if (m->nu != act_dim)
      throw std::runtime_error("model has " + std::to_string(m->nu) + " actuators, the policy outputs " +
                               std::to_string(act_dim) + " actions (wrong --model?)");
    auto read_exact = [](const std::string& path, int n, const char* what) {
      std::vector<double> v = read_numbers(path);
      if (static_cast<int>(v.size()) != n)
        throw std::runtime_error(std::string(what) + " needs " + std::to_string(n) + " numbers, " + path +
                                 " holds " + std::to_string(v.size()));
      return v;
    };
    if (!opt.init_qpos.empty()) qpos_ = read_exact(opt.init_qpos, m->nq, "--init-qpos (nq)");
    if (!opt.init_qvel.empty()) qvel_ = read_exact(opt.init_qvel, m->nv, "--init-qvel (nv)");
    if (meta.raw.at("task").has("max_episode_steps"))
      max_steps_ = static_cast<int>(meta.raw.at("task").at("max_episode_steps").number_or(0.0));
  }
  // qpos0 / zero qvel, optionally with uniform noise from our own RNG (not NumPy's stream), or the
  // given qpos/qvel; mj_forward follows as Gymnasium's set_state.
  void reset(mjData* d, std::mt19937_64& rng) override {
    std::uniform_real_distribution<double> noise(-noise_, noise_);
    for (int i = 0; i < m_->nq; ++i) d->qpos[i] = m_->qpos0[i] + (noise_ > 0 ? noise(rng) : 0.0);
    for (int i = 0; i < m_->nv; ++i) d->qvel[i] = noise_ > 0 ? noise(rng) : 0.0;
    if (!qpos_.empty()) std::copy(qpos_.begin(), qpos_.end(), d->qpos);
    if (!qvel_.empty()) std::copy(qvel_.begin(), qvel_.end(), d->qvel);
    mj_forward(m_, d);
  }
  void observe(const mjData* d, float* obs) override { observe_.build(d, obs); }
  double step(mjData* d, const float* action, bool* terminated, bool* success) override {
    task_.before_step(d);
    for (int i = 0; i < act_dim_; ++i) d->ctrl[i] = static_cast<mjtNum>(action[i]);
    for (int k = 0; k < frame_skip_; ++k) mj_step(m_, d);
    // As Gymnasium does after stepping: cfrc_ext/cacc are not computed by mj_step without force sensors.
    mj_rnePostConstraint(m_, d);
    const double reward = task_.reward(d, action, act_dim_, dt_);
    *terminated = task_.terminated(d);
    *success = false;
    return reward;
  }
  int max_episode_steps() const override { return max_steps_; }
  bool has_success() const override { return false; }

 private:
  const mjModel* m_;
  gail_robot::ObservationBuilder observe_;
  gail_robot::LocomotionTask task_;
  int act_dim_, frame_skip_;
  double dt_, noise_;
  int max_steps_ = 0;
  std::vector<double> qpos_, qvel_;
};

// The project's arm tasks (arm.cpp): Cartesian actions through the DLS IK, success at the goal.
class ArmLoopTask : public LoopTask {
 public:
  ArmLoopTask(const mjModel* m, const gail_robot::PolicyMeta& meta, int obs_dim, int act_dim, const Options& opt)
      : arm_(m, meta.raw.at("observation_layout"), meta.raw.at("task"), obs_dim, act_dim, meta.frame_skip) {
    if (!opt.init_qpos.empty() || !opt.init_qvel.empty() || opt.reset_noise > 0)
      throw std::runtime_error(
          "--init-qpos/--init-qvel/--reset-noise are for walkers: an arm task's state includes its goal and "
          "controller target (mocap bodies), pass --state-file");
  }
  void reset(mjData* d, std::mt19937_64& rng) override {
    double cube_xy[2], goal[3];
    arm_.sample_reset(rng, cube_xy, goal);
    arm_.reset(d, cube_xy, goal);
  }
  void observe(const mjData* d, float* obs) override { arm_.observe(d, obs); }
  double step(mjData* d, const float* action, bool* terminated, bool* success) override {
    arm_.step(d, action);
    const double distance = arm_.goal_distance(d);
    *success = arm_.success(distance);
    *terminated = *success && arm_.terminate_on_success();
    return arm_.reward(d, distance, *success);
  }
  int max_episode_steps() const override { return arm_.max_episode_steps(); }
  bool has_success() const override { return true; }

 private:
  gail_robot::ArmTask arm_;
};

std::unique_ptr<LoopTask> make_task(const mjModel* m, const gail_robot::PolicyMeta& meta, int obs_dim,
                                    int act_dim, const Options& opt) {
  const gail_robot::json::Value& task = meta.raw.at("task");
  if (task.is_null()) throw std::runtime_error("meta.json has no task rules for the C++ controller");
  if (task.at("family").as_string() == "arm")
    return std::make_unique<ArmLoopTask>(m, meta, obs_dim, act_dim, opt);
  return std::make_unique<WalkerTask>(m, meta, obs_dim, act_dim, opt);
}

// The model and the policy must run at the same control rate.
void check_rate(const gail_robot::PolicyMeta& meta, double dt) {
  if (meta.dt > 0 && std::abs(meta.dt - dt) > 1e-9)
    throw std::runtime_error("model timestep x frame_skip = " + std::to_string(dt) +
                             " s differs from the policy's control timestep " + std::to_string(meta.dt) +
                             " s (wrong --model?)");
}

// --state-file: K mjSTATE_INTEGRATION states, one per episode (K >= episodes) or one for every episode.
std::vector<double> read_states(const mjModel* m, const Options& opt) {
  if (opt.state_file.empty()) return {};
  std::vector<double> states = read_numbers(opt.state_file);
  const std::size_t size = static_cast<std::size_t>(mj_stateSize(m, mjSTATE_INTEGRATION));
  if (states.empty() || states.size() % size != 0)
    throw std::runtime_error(opt.state_file + " holds " + std::to_string(states.size()) +
                             " numbers, the mjSTATE_INTEGRATION state of this model has " + std::to_string(size));
  const std::size_t rows = states.size() / size;
  if (rows != 1 && rows < static_cast<std::size_t>(opt.episodes))
    throw std::runtime_error(opt.state_file + " holds " + std::to_string(rows) + " states for " +
                             std::to_string(opt.episodes) + " episodes (give one per episode, or one for all)");
  return states;
}

// The initial state of episode `episode`: a row of --state-file, else the task's own reset.
void initial_state(const mjModel* m, mjData* d, LoopTask& task, const std::vector<double>& states, long episode,
                   std::mt19937_64& rng) {
  mj_resetData(m, d);
  if (states.empty()) {
    task.reset(d, rng);
    return;
  }
  const std::size_t size = static_cast<std::size_t>(mj_stateSize(m, mjSTATE_INTEGRATION));
  const std::size_t rows = states.size() / size;
  const std::size_t row = rows == 1 ? 0 : static_cast<std::size_t>(episode);
  mj_setState(m, d, states.data() + row * size, mjSTATE_INTEGRATION);
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

// Rows of `cols` numbers; %.17g round-trips float64 exactly.
void write_rows_double(const std::string& path, const std::vector<double>& values, int cols) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  for (size_t i = 0; i < values.size(); ++i)
    std::fprintf(f, "%.17g%c", values[i], (i + 1) % static_cast<size_t>(cols) == 0 ? '\n' : ' ');
  std::fclose(f);
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

  ModelHandle h;
  char err[1000] = "";
  h.m = mj_loadXML(opt.model.c_str(), nullptr, err, sizeof(err));
  if (!h.m) throw std::runtime_error("cannot load model " + opt.model + ": " + err);
  h.d = mj_makeData(h.m);
  mjModel* m = h.m;
  mjData* d = h.d;
  const double dt = m->opt.timestep * meta.frame_skip;
  check_rate(meta, dt);
  std::unique_ptr<LoopTask> task = make_task(m, meta, obs_dim, act_dim, opt);
  const std::vector<double> states = read_states(m, opt);
  const long steps_per_episode =
      opt.steps > 0 ? opt.steps : (task->max_episode_steps() > 0 ? task->max_episode_steps() : 1000);
  std::mt19937_64 rng(opt.seed);
  initial_state(m, d, *task, states, 0, rng);

  // ---- buffers and warm-up ------------------------------------------------------------------------
  std::vector<float> observation(static_cast<std::size_t>(obs_dim));
  float* input_ptr = observation.data();
  std::vector<float> action(static_cast<std::size_t>(act_dim));
  // Warm up on the real first observation too (load() warmed up on the normalisation mean).
  task->observe(d, input_ptr);
  for (int i = 0; i < opt.warmup; ++i) policy.act(input_ptr, action.data());
  policy.reset();

  const std::size_t max_steps = static_cast<std::size_t>(steps_per_episode * opt.episodes);
  const int state_size = mj_stateSize(m, mjSTATE_INTEGRATION);
  std::vector<double> infer_us;
  infer_us.reserve(max_steps);
  std::vector<float> action_log, obs_log;
  std::vector<double> state_log;
  if (!opt.actions_out.empty()) action_log.reserve(max_steps * static_cast<std::size_t>(act_dim));
  if (!opt.obs_out.empty()) obs_log.reserve(max_steps * static_cast<std::size_t>(obs_dim));
  if (!opt.states_out.empty()) state_log.resize(max_steps * static_cast<std::size_t>(state_size));
  std::vector<double> returns, episode_steps;
  std::vector<int> successes;
  returns.reserve(static_cast<std::size_t>(opt.episodes));
  episode_steps.reserve(static_cast<std::size_t>(opt.episodes));
  successes.reserve(static_cast<std::size_t>(opt.episodes));
  gail_robot::apply_scheduling(opt.cpu, opt.rt_priority);

  // ---- the control loop ---------------------------------------------------------------------------
  bool fell = false;
  long total_steps = 0;
  const auto loop_start = Clock::now();
  auto next_tick = loop_start;
  const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(dt));
  for (long episode = 0; episode < opt.episodes; ++episode) {
    if (episode > 0) {
      initial_state(m, d, *task, states, episode, rng);
      policy.reset();
    }
    double episode_return = 0.0;
    bool success = false;
    long steps = 0;
    for (; steps < steps_per_episode; ++steps) {
      task->observe(d, input_ptr);
      if (!opt.obs_out.empty()) obs_log.insert(obs_log.end(), input_ptr, input_ptr + obs_dim);

      const auto t0 = Clock::now();
      // A non-finite observation is refused and the last action held (policy.refused() counts them).
      policy.act(input_ptr, action.data());
      const auto t1 = Clock::now();
      infer_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());

      if (!opt.actions_out.empty()) action_log.insert(action_log.end(), action.begin(), action.end());
      bool terminated = false;
      episode_return += task->step(d, action.data(), &terminated, &success);
      if (!opt.states_out.empty())
        mj_getState(m, d, state_log.data() + static_cast<std::size_t>(total_steps) * state_size,
                    mjSTATE_INTEGRATION);
      ++total_steps;
      if (terminated && !task->has_success()) fell = true;
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
      if (terminated && opt.terminate) {
        ++steps;
        break;
      }
    }
    returns.push_back(episode_return);
    episode_steps.push_back(static_cast<double>(steps));
    successes.push_back(success ? 1 : 0);  // info["is_success"] of the last step, as gail-robot eval
  }
  const double loop_s = std::chrono::duration<double>(Clock::now() - loop_start).count();

  // ---- logs and the report ------------------------------------------------------------------------
  if (!opt.actions_out.empty()) write_rows(opt.actions_out, action_log, act_dim);
  if (!opt.obs_out.empty()) write_rows(opt.obs_out, obs_log, obs_dim);
  if (!opt.states_out.empty()) {
    state_log.resize(static_cast<std::size_t>(total_steps) * state_size);
    write_rows_double(opt.states_out, state_log, state_size);
  }
  double mean_return = 0.0;
  for (double r : returns) mean_return += r;
  mean_return /= static_cast<double>(returns.size());
  std::string success_rate = "null";
  if (task->has_success()) {
    int n = 0;
    for (int s : successes) n += s;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.10g", static_cast<double>(n) / static_cast<double>(successes.size()));
    success_rate = buf;
  }
  auto list = [](const std::vector<double>& values) {
    std::string out = "[";
    char buf[64];
    for (std::size_t i = 0; i < values.size(); ++i) {
      std::snprintf(buf, sizeof(buf), "%s%.17g", i ? ", " : "", values[i]);
      out += buf;
    }
    return out + "]";
  };
  std::vector<double> success_values(successes.begin(), successes.end());
  const std::string env_id = json_escape(meta.env_id);
  std::printf(
      "{\"env_id\": \"%s\", \"episodes\": %ld, \"steps\": %ld, \"return\": %.17g, \"success_rate\": %s, "
      "\"fell\": %s, \"returns\": %s, \"episode_steps\": %s, \"successes\": %s, \"infer_us_p50\": %.3f, "
      "\"infer_us_p99\": %.3f, \"infer_us_max\": %.3f, \"loop_hz\": %.1f, \"dt\": %.6g, \"realtime\": %s, "
      "\"backend\": \"%s\", \"refused\": %llu}\n",
      env_id.c_str(), opt.episodes, total_steps, mean_return, success_rate.c_str(), fell ? "true" : "false",
      list(returns).c_str(), list(episode_steps).c_str(),
      task->has_success() ? list(success_values).c_str() : "null", percentile(infer_us, 0.5),
      percentile(infer_us, 0.99), *std::max_element(infer_us.begin(), infer_us.end()),
      static_cast<double>(total_steps) / loop_s, dt, opt.realtime ? "true" : "false", policy.backend().c_str(),
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
