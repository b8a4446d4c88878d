// gail-robot-realtime-loop: the template for putting gail_robot::Policy into a robot's own control loop.
//
//   gail-robot-realtime-loop --policy hopper.pt --model hopper.xml [--hz 500] [--seconds 60]
//                            [--cpu N] [--rt-priority P] [--seed S]
//
// A fixed-rate loop on absolute deadlines: each tick reads the robot's state (here a MuJoCo simulation
// stands in for the robot's sensors), builds the observation, calls act(), applies the targets (ctrl,
// then one physics step of the simulated robot) and sleeps until the next deadline with
// clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME): absolute deadlines do not drift with the work done
// in a tick, as relative sleeps would. A tick whose work ends after the next deadline is a miss; the
// loop then skips the missed deadlines instead of bursting to catch up (a robot wants fresh commands, not
// a backlog). Prints one JSON object: misses, wake-up lateness and act() / tick work times.
//
// Template notes for a real robot:
//  * everything that allocates (Policy::load, model, buffers, the per-tick logs below) happens before
//    the loop; act() allocates nothing for native-mlp policies (policy.allocation_free());
//  * pin the thread to an isolated core (--cpu, with isolcpus/nohz_full on the kernel command line) and
//    run it SCHED_FIFO with locked memory (--rt-priority, needs CAP_SYS_NICE and CAP_IPC_LOCK);
//  * act() returns false when the observation holds a NaN/inf (a sensor fault): the previous action is
//    held; a robot should also count these and stop after a few in a row.
//
// Arm policies (gail_robot/Arm*-v0) run multi-rate, as the arm's controller does in the env and on a
// robot: every tick (500 Hz, the physics rate) one mj_step of the simulated arm; every ik_every ticks
// (100 Hz) a DLS IK update writes joint targets to the servos; every frame_skip ticks (20 Hz) the
// policy reads the observation and moves the Cartesian target. Ticks therefore differ in cost: the
// report splits act() and tick work by kind. This loop reproduces gail-robot-controller's arm loop step
// for step (same arm.cpp calls in the same order); a finished episode (success, or the env's time
// limit) starts a new one from the task's own reset distribution (--seed).
//
// The walkers' policies were trained at dt = frame_skip x timestep (125 Hz for Hopper); at --hz 500 this
// loop runs the policy every physics step: a timing template, not the trained closed loop (that is
// gail-robot-controller's job). A fallen robot is reset in place so the loop keeps its rate for the run.
#include <mujoco/mujoco.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gail_robot/policy.hpp>

#include "arm.hpp"
#include "locomotion.hpp"
#include "scheduling.hpp"

namespace {

constexpr long kNsPerS = 1000000000L;

struct Options {
  std::string policy, model;
  double hz = 500.0, seconds = 10.0;
  int cpu = -1, rt_priority = 0;
  unsigned long seed = 0;
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--policy") o.policy = next();
    else if (a == "--model") o.model = next();
    else if (a == "--hz") o.hz = std::stod(next());
    else if (a == "--seconds") o.seconds = std::stod(next());
    else if (a == "--cpu") o.cpu = std::stoi(next());
    else if (a == "--rt-priority") o.rt_priority = std::stoi(next());
    else if (a == "--seed") o.seed = std::stoul(next());
    else throw std::runtime_error("unknown option '" + a + "'");
  }
  if (o.policy.empty() || o.model.empty()) throw std::runtime_error("--policy and --model are required");
  if (!(o.hz > 0 && o.hz <= 20000) || !(o.seconds > 0)) throw std::runtime_error("need 0 < --hz <= 20000, --seconds > 0");
  return o;
}

long to_ns(const timespec& t) { return t.tv_sec * kNsPerS + t.tv_nsec; }
timespec from_ns(long ns) { return timespec{ns / kNsPerS, ns % kNsPerS}; }
long now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return to_ns(t);
}

double percentile_us(std::vector<long> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)]) / 1e3;
}

void sleep_until_ns(long deadline) {
  const timespec wake = from_ns(deadline);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, nullptr) == EINTR) {
  }
}

// The arm's multi-rate loop (see the header comment): physics every tick, IK every ik_every ticks, the
// policy every frame_skip ticks.
int run_arm(const Options& opt, gail_robot::Policy& policy, mjModel* m, mjData* d) {
  const gail_robot::PolicyMeta& meta = policy.meta();
  gail_robot::ArmTask arm(m, meta.raw.at("observation_layout"), meta.raw.at("task"), policy.obs_dim(),
                          policy.act_dim(), meta.frame_skip);
  const int frame_skip = arm.frame_skip(), ik_every = arm.ik_every();
  const int horizon = arm.max_episode_steps() > 0 ? arm.max_episode_steps() : 100;
  std::mt19937_64 rng(opt.seed);
  auto new_episode = [&]() {
    double cube_xy[2], goal[3];
    arm.sample_reset(rng, cube_xy, goal);
    mj_resetData(m, d);
    arm.reset(d, cube_xy, goal);
    policy.reset();
  };
  new_episode();
  std::vector<float> obs(static_cast<std::size_t>(policy.obs_dim())), action(static_cast<std::size_t>(policy.act_dim()));
  const long period = std::lround(kNsPerS / opt.hz);
  const long ticks = std::lround(opt.seconds * opt.hz);
  std::vector<long> lateness, act_ns, control_work_ns, ik_work_ns, step_work_ns;  // preallocated
  lateness.reserve(static_cast<std::size_t>(ticks));
  act_ns.reserve(static_cast<std::size_t>(ticks / frame_skip + 1));
  control_work_ns.reserve(static_cast<std::size_t>(ticks / frame_skip + 1));
  ik_work_ns.reserve(static_cast<std::size_t>(ticks / ik_every + 1));
  step_work_ns.reserve(static_cast<std::size_t>(ticks));
  gail_robot::apply_scheduling(opt.cpu, opt.rt_priority);

  long misses = 0, skipped = 0, refused = 0, episodes = 0, successes = 0, control_step = 0;
  long deadline = now_ns() + period;
  for (long tick = 0; tick < ticks; ++tick) {
    const long start = now_ns();
    const int phase = static_cast<int>(tick % frame_skip);
    if (phase == 0) {                                    // 20 Hz: observe, act, move the Cartesian target
      arm.observe(d, obs.data());
      const long t0 = now_ns();
      refused += policy.act(obs.data(), action.data()) ? 0 : 1;
      act_ns.push_back(now_ns() - t0);
      arm.set_action(d, action.data());
    }
    if (phase % ik_every == 0) arm.ik_update(d, phase / ik_every);  // 100 Hz: joint targets
    mj_step(m, d);                                                  // 500 Hz: the arm moves on
    if (phase == frame_skip - 1) {                       // end of a control step, as ArmEnv.step
      mj_forward(m, d);
      ++control_step;
      const bool success = arm.success(arm.goal_distance(d));
      if ((success && arm.terminate_on_success()) || control_step == horizon) {
        ++episodes;
        successes += success ? 1 : 0;
        control_step = 0;
        new_episode();
      }
    }
    const long done = now_ns();
    (phase == 0 ? control_work_ns : phase % ik_every == 0 ? ik_work_ns : step_work_ns).push_back(done - start);
    if (done > deadline) {
      ++misses;
      const long behind = (done - deadline) / period + 1;
      skipped += behind;
      deadline += behind * period;
    }
    sleep_until_ns(deadline);
    lateness.push_back(now_ns() - deadline);
    deadline += period;
  }
  std::printf(
      "{\"env_id\": \"%s\", \"backend\": \"%s\", \"hz\": %.6g, \"ticks\": %ld, \"seconds\": %.6g, "
      "\"policy_hz\": %.6g, \"ik_hz\": %.6g, \"deadline_misses\": %ld, \"deadlines_skipped\": %ld, "
      "\"wake_late_us_p50\": %.3f, \"wake_late_us_p99\": %.3f, \"wake_late_us_max\": %.3f, "
      "\"act_us_p50\": %.3f, \"act_us_p99\": %.3f, \"act_us_max\": %.3f, "
      "\"control_tick_work_us_p50\": %.3f, \"control_tick_work_us_p99\": %.3f, \"control_tick_work_us_max\": %.3f, "
      "\"ik_tick_work_us_p50\": %.3f, \"ik_tick_work_us_p99\": %.3f, \"ik_tick_work_us_max\": %.3f, "
      "\"step_tick_work_us_p50\": %.3f, \"step_tick_work_us_p99\": %.3f, \"step_tick_work_us_max\": %.3f, "
      "\"episodes\": %ld, \"successes\": %ld, \"refused\": %ld, \"rt_priority\": %d, \"cpu\": %d}\n",
      meta.env_id.c_str(), policy.backend().c_str(), opt.hz, ticks, opt.seconds, opt.hz / frame_skip,
      opt.hz / ik_every, misses, skipped, percentile_us(lateness, 0.5), percentile_us(lateness, 0.99),
      percentile_us(lateness, 1.0), percentile_us(act_ns, 0.5), percentile_us(act_ns, 0.99),
      percentile_us(act_ns, 1.0), percentile_us(control_work_ns, 0.5), percentile_us(control_work_ns, 0.99),
      percentile_us(control_work_ns, 1.0), percentile_us(ik_work_ns, 0.5), percentile_us(ik_work_ns, 0.99),
      percentile_us(ik_work_ns, 1.0), percentile_us(step_work_ns, 0.5), percentile_us(step_work_ns, 0.99),
      percentile_us(step_work_ns, 1.0), episodes, successes, refused, opt.rt_priority, opt.cpu);
  return 0;
}

int run(const Options& opt) {
  // ---- before the loop: everything that allocates -------------------------------------------------
  // MuJoCo prints warnings to stdout by default; stdout carries the JSON report.
  mju_user_warning = [](const char* msg) { std::fprintf(stderr, "MuJoCo warning: %s\n", msg); };
  gail_robot::Policy policy = gail_robot::Policy::load(opt.policy);
  const gail_robot::PolicyMeta& meta = policy.meta();
  char err[1000] = "";
  mjModel* m = mj_loadXML(opt.model.c_str(), nullptr, err, sizeof(err));
  if (!m) throw std::runtime_error("cannot load model " + opt.model + ": " + err);
  mjData* d = mj_makeData(m);
  const gail_robot::json::Value& task_rules = meta.raw.at("task");
  if (task_rules.is_null()) throw std::runtime_error("meta.json has no task rules for the C++ controller");
  if (task_rules.at("family").as_string() == "arm") {
    const int rc = run_arm(opt, policy, m, d);
    mj_deleteData(d);
    mj_deleteModel(m);
    return rc;
  }
  if (m->nu != policy.act_dim()) throw std::runtime_error("model actuators != policy act_dim (wrong --model?)");
  gail_robot::ObservationBuilder observe(m, meta.raw.at("observation_layout"), policy.obs_dim());
  gail_robot::LocomotionTask task(m, meta.raw.at("task"));
  mj_forward(m, d);
  std::vector<float> obs(static_cast<std::size_t>(policy.obs_dim())), action(static_cast<std::size_t>(policy.act_dim()));
  const long period = std::lround(kNsPerS / opt.hz);
  const long ticks = std::lround(opt.seconds * opt.hz);
  std::vector<long> lateness, act_ns, work_ns;  // per tick, preallocated: no allocation in the loop
  lateness.reserve(static_cast<std::size_t>(ticks));
  act_ns.reserve(static_cast<std::size_t>(ticks));
  work_ns.reserve(static_cast<std::size_t>(ticks));
  gail_robot::apply_scheduling(opt.cpu, opt.rt_priority);

  // ---- the fixed-rate loop --------------------------------------------------------------------------
  long misses = 0, skipped = 0, resets = 0, refused = 0;
  long deadline = now_ns() + period;
  for (long tick = 0; tick < ticks; ++tick) {
    const long start = now_ns();
    observe.build(d, obs.data());                        // read the robot's state
    refused += policy.act(obs.data(), action.data()) ? 0 : 1;
    const long acted = now_ns();
    for (int i = 0; i < m->nu; ++i) d->ctrl[i] = action[static_cast<std::size_t>(i)];  // apply the targets
    mj_step(m, d);                                       // the simulated robot moves on by one step
    if (task.terminated(d)) {                            // fallen: reset in place, keep the rate
      mj_resetData(m, d);
      mj_forward(m, d);
      ++resets;
    }
    const long done = now_ns();
    act_ns.push_back(acted - start);
    work_ns.push_back(done - start);
    if (done > deadline) {  // the work of this tick ran past its deadline
      ++misses;
      const long behind = (done - deadline) / period + 1;
      skipped += behind;
      deadline += behind * period;
    }
    const timespec wake = from_ns(deadline);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, nullptr) == EINTR) {
    }
    lateness.push_back(now_ns() - deadline);
    deadline += period;
  }

  std::printf(
      "{\"env_id\": \"%s\", \"backend\": \"%s\", \"hz\": %.6g, \"ticks\": %ld, \"seconds\": %.6g, "
      "\"deadline_misses\": %ld, \"deadlines_skipped\": %ld, \"wake_late_us_p50\": %.3f, "
      "\"wake_late_us_p99\": %.3f, \"wake_late_us_max\": %.3f, \"act_us_p50\": %.3f, \"act_us_p99\": %.3f, "
      "\"act_us_max\": %.3f, \"tick_work_us_p50\": %.3f, \"tick_work_us_p99\": %.3f, \"tick_work_us_max\": %.3f, "
      "\"resets\": %ld, \"refused\": %ld, \"rt_priority\": %d, \"cpu\": %d}\n",
      meta.env_id.c_str(), policy.backend().c_str(), opt.hz, ticks, opt.seconds, misses, skipped,
      percentile_us(lateness, 0.5), percentile_us(lateness, 0.99), percentile_us(lateness, 1.0),
      percentile_us(act_ns, 0.5), percentile_us(act_ns, 0.99), percentile_us(act_ns, 1.0),
      percentile_us(work_ns, 0.5), percentile_us(work_ns, 0.99), percentile_us(work_ns, 1.0), resets, refused,
      opt.rt_priority, opt.cpu);
  mj_deleteData(d);
  mj_deleteModel(m);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "gail-robot-realtime-loop: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  }
}
