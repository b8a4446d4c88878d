// Observation, reward and termination of the Gymnasium v5 locomotion family (Hopper, Walker2d,
// HalfCheetah, Ant, Humanoid) on the MuJoCo C API, driven by the policy's meta.json.
//
// The observation is described by a layout of segments (field, offset, size, optional clip) that
// gail_robot.export derives from the Python env and checks against env._get_obs() before writing it,
// so this file holds no per-robot observation code: only the reward/health rules, which differ per env.
#pragma once

#include <mujoco/mujoco.h>

#include <limits>
#include <string>
#include <vector>

#include <gail_robot/json.hpp>

namespace gail_robot {

// One contiguous slice of an mjData array copied into the observation.
struct ObsSegment {
  std::string field;  // qpos, qvel, cinert, cvel, qfrc_actuator or cfrc_ext
  int offset = 0;     // first element in the flattened array (e.g. 1 skips Hopper's x)
  int size = 0;
  bool clip = false;
  double clip_low = -std::numeric_limits<double>::infinity();
  double clip_high = std::numeric_limits<double>::infinity();
};

class ObservationBuilder {
 public:
  ObservationBuilder(const mjModel* m, const json::Value& layout, int obs_dim);
  // Writes the observation of `d` into `out` (obs_dim floats), converting mjtNum -> float32 last,
  // as the Python policy does with the env's float64 observation.
  void build(const mjData* d, float* out) const;

 private:
  const mjModel* m_;
  std::vector<ObsSegment> segments_;
  const mjtNum* field_ptr(const mjData* d, const std::string& field) const;
  int field_size(const std::string& field) const;
};

// Reward and health rules of one v5 env with the kwargs the policy was trained with.
class LocomotionTask {
 public:
  LocomotionTask(const mjModel* m, const json::Value& task);
  const std::string& family() const { return family_; }
  // Call before stepping: remembers the position used for the forward velocity.
  void before_step(const mjData* d);
  // Reward of the step that just ran (after frame_skip mj_step + mj_rnePostConstraint), as the v5
  // env computes it from the action it was given.
  double reward(const mjData* d, const float* action, int act_dim, double dt) const;
  bool healthy(const mjData* d) const;
  bool terminated(const mjData* d) const { return terminate_when_unhealthy_ && !healthy(d); }

 private:
  const mjModel* m_;
  std::string family_;
  double forward_w_ = 1.0, ctrl_w_ = 0.0, healthy_reward_ = 0.0;
  double contact_w_ = 0.0;
  double contact_force_lo_ = -std::numeric_limits<double>::infinity();
  double contact_force_hi_ = std::numeric_limits<double>::infinity();
  double contact_cost_lo_ = -std::numeric_limits<double>::infinity();
  double contact_cost_hi_ = std::numeric_limits<double>::infinity();
  double state_lo_ = -std::numeric_limits<double>::infinity();
  double state_hi_ = std::numeric_limits<double>::infinity();
  double z_lo_ = -std::numeric_limits<double>::infinity(), z_hi_ = std::numeric_limits<double>::infinity();
  double angle_lo_ = -std::numeric_limits<double>::infinity();
  double angle_hi_ = std::numeric_limits<double>::infinity();
  bool has_state_range_ = false, has_angle_range_ = false;
  bool terminate_when_unhealthy_ = false;
  int main_body_ = 1;
  double x_before_ = 0.0, y_before_ = 0.0;

  void position(const mjData* d, double* x, double* y) const;
};

}  // namespace gail_robot
