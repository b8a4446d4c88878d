// The project's arm tasks (gail_robot/ArmReach-v0, ArmPush-v0, ArmPickPlace-v0) on the MuJoCo C API:
// observation builder, Cartesian controller (damped-least-squares IK on mj_jacSite + gripper), reset
// sampling, reward and success, driven by meta.json's "observation_layout" and "task" (family "arm").
//
// This is gail_robot/envs/arm.py (ArmEnv.step, _get_obs, reset_model, _reward) and
// gail_robot/envs/arm_ik.py (DifferentialIK) line for line, in the same floating-point order: the IK's
// linear algebra calls the same libmujoco routines as the Python controller, so from the same physics
// state the C++ loop reproduces the Python env bit for bit (docs/DESIGN.md §5.1). Nothing here
// allocates after construction.
#pragma once

#include <mujoco/mujoco.h>

#include <array>
#include <random>
#include <string>
#include <vector>

#include <gail_robot/json.hpp>

namespace gail_robot {

class ArmTask {
 public:
  static constexpr int kActDim = 4;  // [dx, dy, dz, grip]

  // `layout`: meta.json's observation_layout (named fields of gail_robot.envs.arm.OBS_SLICES, any
  // order); `task`: meta.json's task (family "arm"). Throws std::runtime_error (one line) for a layout
  // or task this code cannot build, or a model without the names the task gives.
  ArmTask(const mjModel* m, const json::Value& layout, const json::Value& task, int obs_dim, int act_dim,
          int frame_skip);

  int max_episode_steps() const { return max_episode_steps_; }
  bool terminate_on_success() const { return terminate_on_success_; }
  int ik_every() const { return ik_every_; }
  int frame_skip() const { return frame_skip_; }

  // ArmEnv.reset_model with the cube's (x, y) and the goal given: home keyframe, cube on the table
  // axis-aligned, zero velocities, mj_forward, controller target on the TCP.
  void reset(mjData* d, const double cube_xy[2], const double goal[3]) const;
  // The env's reset distributions (cube, then goal: rejection sampling for push / pick-and-place, the
  // air-or-table coin for pick-and-place), drawn from our own RNG, not NumPy's stream.
  void sample_reset(std::mt19937_64& rng, double cube_xy[2], double goal[3]) const;

  // ArmEnv._get_obs, in the layout's order, rounded to float32 last.
  void observe(const mjData* d, float* out);

  // One env step (ArmEnv.step): set_action, then frame_skip / ik_every times (ik_update + ik_every
  // mj_step), then mj_forward. The multi-rate pieces are public for the real-time loop.
  void step(mjData* d, const float* action);
  // Start of a control step: clip the action, move the mocap target (lead and workspace limits), set
  // the gripper servo, remember the target's path for the IK updates.
  void set_action(mjData* d, const float* action);
  // IK update `inner` (0 .. frame_skip / ik_every - 1) of the current control step: joint targets for
  // the waypoint (inner + 1) / n of the way along the target's path, with velocity feedforward.
  void ik_update(mjData* d, int inner);

  // The goal distance (TCP for reach, cube otherwise), success, and the reward of the state in `d`.
  double goal_distance(const mjData* d) const;
  bool success(double distance) const { return distance < distance_threshold_; }
  double reward(const mjData* d, double distance, bool success) const;

 private:
  enum class Field {
    JointPos, JointVel, EePos, EeVel, EeTarget, GripperOpening, CubePos, CubeQuat, CubeLinvel,
    CubeAngvel, GoalPos, CubeRelEe, GoalRelCube, GoalRelEe
  };
  struct Segment {
    Field field;
    int offset, size;
  };

  const mjModel* m_;
  std::vector<Segment> segments_;
  std::string task_;
  bool goal_is_for_cube_ = true, sparse_ = false, terminate_on_success_ = true;
  double distance_threshold_ = 0.05;
  int max_episode_steps_ = 0, frame_skip_ = 25, ik_every_ = 5;
  double action_scale_ = 0.03, max_target_lead_ = 0.06, gripper_max_opening_ = 0.04;
  std::array<double, 3> workspace_low_{}, workspace_high_{};
  std::array<double, 4> target_quat_{};
  // Reset ranges.
  double table_z_ = 0.0, cube_half_size_ = 0.025, min_goal_distance_ = 0.1;
  std::array<double, 2> cube_low_{}, cube_high_{}, air_goal_height_{};
  std::array<double, 3> reach_goal_low_{}, reach_goal_high_{};
  // Model indices.
  int site_ = -1, home_key_ = -1, goal_mocap_ = -1, target_mocap_ = -1, gripper_actuator_ = -1;
  int cube_qpos_ = -1, cube_dof_ = -1;
  std::array<int, 2> finger_qpos_{};
  std::vector<int> arm_qpos_, arm_dof_, arm_actuators_;
  std::vector<double> joint_low_, joint_high_, servo_lag_;
  // DifferentialIK.
  double damping_ = 0.02, orientation_weight_ = 0.3, null_gain_ = 0.05, max_joint_step_ = 0.25;
  std::vector<double> rest_qpos_;
  // Scratch (allocated once).
  std::vector<double> jacp_, jacr_, jac_, posture_, dq_, qvel_target_;
  std::array<double, 36> chol_{};
  std::array<double, 6> err_{}, vel_{}, jac_posture_{}, solved_{}, site_vel_{};
  // The current control step's target path.
  std::array<double, 3> start_{}, target_{}, target_vel_{};
  double dt_ = 0.05;

  void joint_targets(const mjData* d, const double* target_pos, const double* target_vel);
};

}  // namespace gail_robot
