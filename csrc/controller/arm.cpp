// The arm tasks in C++: see arm.hpp. Every expression below mirrors one in gail_robot/envs/arm.py or
// gail_robot/envs/arm_ik.py in the same order (NumPy's element-wise ops are IEEE double ops; the matrix
// products and the solve are libmujoco's mju_* routines on both sides), which is what makes the
// closed-loop parity exact (docs/DESIGN.md §5.1). This file is compiled with -ffp-contract=off so the
// compiler never fuses a multiply and an add that Python rounds separately.
#include "arm.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace gail_robot {

namespace {

template <std::size_t N>
std::array<double, N> read_array(const json::Value& task, const std::string& key) {
  const json::Value& v = task.at(key);
  if (v.kind != json::Value::Kind::Array || v.array.size() != N)
    throw std::runtime_error("meta.json: task '" + key + "' must be a list of " + std::to_string(N) + " numbers");
  std::array<double, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = v.array[i].as_number();
  return out;
}

std::vector<std::string> read_names(const json::Value& task, const std::string& key) {
  const json::Value& v = task.at(key);
  if (v.kind != json::Value::Kind::Array) throw std::runtime_error("meta.json: task '" + key + "' must be a list");
  std::vector<std::string> out;
  for (const json::Value& x : v.array) out.push_back(x.as_string());
  return out;
}

int find(const mjModel* m, mjtObj type, const std::string& name, const char* what) {
  const int id = mj_name2id(m, type, name.c_str());
  if (id < 0)
    throw std::runtime_error(std::string("the model has no ") + what + " named '" + name +
                             "' (wrong --model for an arm policy?)");
  return id;
}

// np.clip(x, lo, hi) for one element: minimum(maximum(x, lo), hi).
double clip(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }

double norm3(double x, double y, double z) { return std::sqrt(x * x + y * y + z * z); }

// The arm observation fields (gail_robot.envs.arm.OBS_SLICES) and their sizes.
struct FieldInfo {
  const char* name;
  int size;
};
constexpr FieldInfo kFields[] = {
    {"joint_pos", 7}, {"joint_vel", 7},       {"ee_pos", 3},      {"ee_vel", 3},         {"ee_target", 3},
    {"gripper_opening", 1}, {"cube_pos", 3},  {"cube_quat", 4},   {"cube_linvel", 3},    {"cube_angvel", 3},
    {"goal_pos", 3},  {"cube_rel_ee", 3},     {"goal_rel_cube", 3}, {"goal_rel_ee", 3},
};

std::string field_names() {
  std::string out;
  for (const FieldInfo& f : kFields) out += (out.empty() ? "" : ", ") + std::string(f.name);
  return out;
}

}  // namespace

ArmTask::ArmTask(const mjModel* m, const json::Value& layout, const json::Value& task, int obs_dim, int act_dim,
                 int frame_skip)
    : m_(m), frame_skip_(frame_skip) {
  if (task.at("family").as_string() != "arm") throw std::runtime_error("ArmTask needs a task of family 'arm'");
  if (act_dim != kActDim)
    throw std::runtime_error("the arm tasks take 4 actions [dx, dy, dz, grip], the policy outputs " +
                             std::to_string(act_dim));

  // ---- the observation layout: named fields, any order, each a slice of its field -----------------
  if (layout.kind != json::Value::Kind::Array)
    throw std::runtime_error("meta.json: this arm policy has no observation_layout");
  int total = 0;
  for (const json::Value& s : layout.array) {
    const std::string& name = s.at("field").as_string();
    int index = -1;
    for (int i = 0; i < static_cast<int>(std::size(kFields)); ++i)
      if (name == kFields[i].name) index = i;
    if (index < 0)
      throw std::runtime_error("observation layout: '" + name + "' is not an arm observation field (known: " +
                               field_names() + ")");
    const int offset = s.at("offset").as_int(), size = s.at("size").as_int();
    if (offset < 0 || size < 0 || offset + size > kFields[index].size)
      throw std::runtime_error("observation layout: " + name + "[" + std::to_string(offset) + ":" +
                               std::to_string(offset + size) + "] does not fit the field (size " +
                               std::to_string(kFields[index].size) + ")");
    if (s.has("clip") && !s.at("clip").is_null())
      throw std::runtime_error("observation layout: the arm field " + name + " takes no clip");
    segments_.push_back({static_cast<Field>(index), offset, size});
    total += size;
  }
  if (total != obs_dim)
    throw std::runtime_error("observation layout has " + std::to_string(total) + " values, the policy expects " +
                             std::to_string(obs_dim));

  // ---- task rules and the controller's constants ---------------------------------------------------
  task_ = task.at("task").as_string();
  if (task_ != "reach" && task_ != "push" && task_ != "pick_place")
    throw std::runtime_error("unknown arm task '" + task_ + "' (reach, push or pick_place)");
  goal_is_for_cube_ = task.at("goal_is_for_cube").as_bool();
  const std::string& reward_type = task.at("reward_type").as_string();
  if (reward_type != "dense" && reward_type != "sparse")
    throw std::runtime_error("unknown reward_type '" + reward_type + "'");
  sparse_ = reward_type == "sparse";
  terminate_on_success_ = task.at("terminate_on_success").as_bool();
  distance_threshold_ = task.at("distance_threshold").as_number();
  max_episode_steps_ = static_cast<int>(task.at("max_episode_steps").number_or(0.0));
  ik_every_ = task.at("ik_every").as_int();
  if (ik_every_ < 1 || frame_skip_ % ik_every_ != 0)
    throw std::runtime_error("meta.json: ik_every must divide frame_skip");
  action_scale_ = task.at("action_scale").as_number();
  max_target_lead_ = task.at("max_target_lead").as_number();
  workspace_low_ = read_array<3>(task, "workspace_low");
  workspace_high_ = read_array<3>(task, "workspace_high");
  gripper_max_opening_ = task.at("gripper_max_opening").as_number();
  target_quat_ = read_array<4>(task, "target_quat");
  const json::Value& ik = task.at("ik");
  damping_ = ik.at("damping").as_number();
  orientation_weight_ = ik.at("orientation_weight").as_number();
  null_gain_ = ik.at("null_gain").as_number();
  max_joint_step_ = ik.at("max_joint_step").as_number();
  for (const json::Value& v : ik.at("rest_qpos").array) rest_qpos_.push_back(v.as_number());
  const json::Value& reset = task.at("reset");
  table_z_ = reset.at("table_z").as_number();
  cube_half_size_ = reset.at("cube_half_size").as_number();
  cube_low_ = read_array<2>(reset, "cube_low");
  cube_high_ = read_array<2>(reset, "cube_high");
  reach_goal_low_ = read_array<3>(reset, "reach_goal_low");
  reach_goal_high_ = read_array<3>(reset, "reach_goal_high");
  air_goal_height_ = read_array<2>(reset, "air_goal_height");
  min_goal_distance_ = reset.at("min_goal_distance").as_number();

  // ---- model indices, found by name -----------------------------------------------------------------
  site_ = find(m, mjOBJ_SITE, task.at("site").as_string(), "site");
  home_key_ = find(m, mjOBJ_KEY, task.at("home_key").as_string(), "keyframe");
  auto mocap = [&](const std::string& body) {
    const int id = m->body_mocapid[find(m, mjOBJ_BODY, body, "body")];
    if (id < 0) throw std::runtime_error("body '" + body + "' is not a mocap body");
    return id;
  };
  goal_mocap_ = mocap(task.at("goal_body").as_string());
  target_mocap_ = mocap(task.at("target_body").as_string());
  gripper_actuator_ = find(m, mjOBJ_ACTUATOR, task.at("gripper_actuator").as_string(), "actuator");
  const int cube = find(m, mjOBJ_JOINT, task.at("cube_joint").as_string(), "joint");
  if (m->jnt_type[cube] != mjJNT_FREE) throw std::runtime_error("the cube joint is not a free joint");
  cube_qpos_ = m->jnt_qposadr[cube];
  cube_dof_ = m->jnt_dofadr[cube];
  const std::vector<std::string> fingers = read_names(task, "fingers");
  if (fingers.size() != 2) throw std::runtime_error("meta.json: task 'fingers' must name two joints");
  for (int i = 0; i < 2; ++i) finger_qpos_[i] = m->jnt_qposadr[find(m, mjOBJ_JOINT, fingers[i], "joint")];
  const std::vector<std::string> joints = read_names(task, "arm_joints");
  const std::vector<std::string> actuators = read_names(task, "arm_actuators");
  if (joints.size() != 7 || actuators.size() != 7 || rest_qpos_.size() != 7)
    throw std::runtime_error("meta.json: the arm task needs 7 arm joints, actuators and rest_qpos values");
  for (std::size_t j = 0; j < joints.size(); ++j) {
    const int id = find(m, mjOBJ_JOINT, joints[j], "joint");
    arm_qpos_.push_back(m->jnt_qposadr[id]);
    arm_dof_.push_back(m->jnt_dofadr[id]);
    joint_low_.push_back(m->jnt_range[2 * id]);
    joint_high_.push_back(m->jnt_range[2 * id + 1]);
    const int a = find(m, mjOBJ_ACTUATOR, actuators[j], "actuator");
    arm_actuators_.push_back(a);
    // ArmEnv._servo_lag: kv / kp of the position servo (velocity feedforward, see arm.py).
    servo_lag_.push_back(-m->actuator_biasprm[mjNBIAS * a + 2] / m->actuator_gainprm[mjNGAIN * a]);
  }
  dt_ = m->opt.timestep * frame_skip_;  // MujocoEnv.dt

  const std::size_t n = joints.size();
  jacp_.assign(static_cast<std::size_t>(3 * m->nv), 0.0);
  jacr_.assign(static_cast<std::size_t>(3 * m->nv), 0.0);
  jac_.assign(6 * n, 0.0);
  posture_.assign(n, 0.0);
  dq_.assign(n, 0.0);
  qvel_target_.assign(n, 0.0);
}

void ArmTask::reset(mjData* d, const double cube_xy[2], const double goal[3]) const {
  mj_resetDataKeyframe(m_, d, home_key_);
  mjtNum* q = d->qpos + cube_qpos_;
  q[0] = cube_xy[0];
  q[1] = cube_xy[1];
  q[2] = table_z_ + cube_half_size_;
  q[3] = 1.0;
  q[4] = q[5] = q[6] = 0.0;
  for (int k = 0; k < 3; ++k) d->mocap_pos[3 * goal_mocap_ + k] = goal[k];
  for (int i = 0; i < m_->nv; ++i) d->qvel[i] = 0.0;  // MujocoEnv.set_state(qpos, zeros)
  mj_forward(m_, d);
  for (int k = 0; k < 3; ++k) d->mocap_pos[3 * target_mocap_ + k] = d->site_xpos[3 * site_ + k];
}

void ArmTask::sample_reset(std::mt19937_64& rng, double cube_xy[2], double goal[3]) const {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * u(rng); };
  for (int k = 0; k < 2; ++k) cube_xy[k] = uniform(cube_low_[k], cube_high_[k]);
  if (task_ == "reach") {
    for (int k = 0; k < 3; ++k) goal[k] = uniform(reach_goal_low_[k], reach_goal_high_[k]);
    return;
  }
  // _goal_away_from: rejection sampling in the cube's range (over 80 % of it is accepted).
  double gx = 0.0, gy = 0.0;
  do {
    gx = uniform(cube_low_[0], cube_high_[0]);
    gy = uniform(cube_low_[1], cube_high_[1]);
  } while (std::hypot(gx - cube_xy[0], gy - cube_xy[1]) < min_goal_distance_);
  goal[0] = gx;
  goal[1] = gy;
  goal[2] = table_z_ + cube_half_size_;
  if (task_ == "pick_place") {
    // Both numbers drawn always, as in ArmPickPlaceEnv._sample_goal.
    const bool in_air = u(rng) < 0.5;
    const double height = uniform(air_goal_height_[0], air_goal_height_[1]);
    goal[2] = table_z_ + cube_half_size_ + (in_air ? height : 0.0);
  }
}

void ArmTask::observe(const mjData* d, float* out) {
  const double* ee = d->site_xpos + 3 * site_;
  mj_objectVelocity(m_, d, mjOBJ_SITE, site_, site_vel_.data(), 0);
  const double* cube = d->qpos + cube_qpos_;
  const double* quat = cube + 3;
  const double quat_sign = quat[0] < 0 ? -1.0 : 1.0;  // q and -q: one sign, w >= 0
  const double* goal = d->mocap_pos + 3 * goal_mocap_;
  const double* target = d->mocap_pos + 3 * target_mocap_;
  for (const Segment& seg : segments_) {
    for (int i = seg.offset; i < seg.offset + seg.size; ++i) {
      double v = 0.0;
      switch (seg.field) {
        case Field::JointPos: v = d->qpos[arm_qpos_[static_cast<std::size_t>(i)]]; break;
        case Field::JointVel: v = d->qvel[arm_dof_[static_cast<std::size_t>(i)]]; break;
        case Field::EePos: v = ee[i]; break;
        case Field::EeVel: v = site_vel_[static_cast<std::size_t>(3 + i)]; break;
        case Field::EeTarget: v = target[i]; break;
        case Field::GripperOpening: v = d->qpos[finger_qpos_[0]] + d->qpos[finger_qpos_[1]]; break;
        case Field::CubePos: v = cube[i]; break;
        case Field::CubeQuat: v = quat_sign < 0 ? -quat[i] : quat[i]; break;
        case Field::CubeLinvel: v = d->qvel[cube_dof_ + i]; break;
        case Field::CubeAngvel: v = d->qvel[cube_dof_ + 3 + i]; break;
        case Field::GoalPos: v = goal[i]; break;
        case Field::CubeRelEe: v = cube[i] - ee[i]; break;
        case Field::GoalRelCube: v = goal[i] - cube[i]; break;
        case Field::GoalRelEe: v = goal[i] - ee[i]; break;
      }
      *out++ = static_cast<float>(v);
    }
  }
}

void ArmTask::set_action(mjData* d, const float* action) {
  double act[kActDim];
  for (int i = 0; i < kActDim; ++i) act[i] = clip(static_cast<double>(action[i]), -1.0, 1.0);
  const double* ee = d->site_xpos + 3 * site_;
  double* mocap = d->mocap_pos + 3 * target_mocap_;
  for (int k = 0; k < 3; ++k) {
    start_[k] = mocap[k];
    double t = start_[k] + action_scale_ * act[k];
    t = clip(t, ee[k] - max_target_lead_, ee[k] + max_target_lead_);
    target_[k] = clip(t, workspace_low_[k], workspace_high_[k]);
  }
  for (int k = 0; k < 3; ++k) mocap[k] = target_[k];
  d->ctrl[gripper_actuator_] = gripper_max_opening_ * 0.5 * (1.0 - act[3]);
  for (int k = 0; k < 3; ++k) target_vel_[k] = (target_[k] - start_[k]) / dt_;
}

void ArmTask::ik_update(mjData* d, int inner) {
  const int n_inner = frame_skip_ / ik_every_;
  const double s = static_cast<double>(inner + 1) / static_cast<double>(n_inner);
  double waypoint[3];
  for (int k = 0; k < 3; ++k) waypoint[k] = start_[k] + s * (target_[k] - start_[k]);
  joint_targets(d, waypoint, target_vel_.data());
  // joint_targets left q_des in dq_ and qd_des in qvel_target_.
  for (std::size_t j = 0; j < arm_actuators_.size(); ++j)
    d->ctrl[arm_actuators_[j]] = dq_[j] + servo_lag_[j] * qvel_target_[j];
}

void ArmTask::joint_targets(const mjData* d, const double* target_pos, const double* target_vel) {
  const int nv = m_->nv;
  const int n = static_cast<int>(arm_dof_.size());
  mj_jacSite(m_, d, jacp_.data(), jacr_.data(), site_);
  for (int r = 0; r < 3; ++r) {
    for (int j = 0; j < n; ++j) {
      jac_[static_cast<std::size_t>(r * n + j)] = jacp_[static_cast<std::size_t>(r * nv + arm_dof_[j])];
      jac_[static_cast<std::size_t>((3 + r) * n + j)] =
          orientation_weight_ * jacr_[static_cast<std::size_t>(r * nv + arm_dof_[j])];
    }
  }
  // Pose error: position, then the world-frame rotation vector of q_target * q_site^-1.
  const double* site_pos = d->site_xpos + 3 * site_;
  for (int k = 0; k < 3; ++k) err_[k] = target_pos[k] - site_pos[k];
  double site_quat[4], site_quat_inv[4], quat_err[4], rot_err[3];
  mju_mat2Quat(site_quat, d->site_xmat + 9 * site_);
  mju_negQuat(site_quat_inv, site_quat);
  mju_mulQuat(quat_err, target_quat_.data(), site_quat_inv);
  mju_quat2Vel(rot_err, quat_err, 1.0);
  for (int k = 0; k < 3; ++k) err_[3 + k] = orientation_weight_ * rot_err[k];
  for (int k = 0; k < 3; ++k) {
    vel_[k] = target_vel[k];
    vel_[3 + k] = 0.0;
  }
  // dq = posture + J^T (J J^T + lambda^2 I)^-1 (error - J posture); qvel = J^T (...)^-1 [v; 0].
  for (int j = 0; j < n; ++j) posture_[j] = null_gain_ * (rest_qpos_[j] - d->qpos[arm_qpos_[j]]);
  mju_mulMatMatT(chol_.data(), jac_.data(), jac_.data(), 6, n, 6);
  const double damping_sq = damping_ * damping_;
  for (int i = 0; i < 6; ++i) chol_[static_cast<std::size_t>(7 * i)] += damping_sq;
  mju_cholFactor(chol_.data(), 6, 0.0);
  mju_mulMatVec(jac_posture_.data(), jac_.data(), posture_.data(), 6, n);
  for (int k = 0; k < 6; ++k) err_[k] -= jac_posture_[k];
  mju_cholSolve(solved_.data(), chol_.data(), err_.data(), 6);
  mju_mulMatTVec(dq_.data(), jac_.data(), solved_.data(), 6, n);
  for (int j = 0; j < n; ++j) {
    double step = dq_[j] + posture_[j];
    step = clip(step, -max_joint_step_, max_joint_step_);
    dq_[j] = clip(d->qpos[arm_qpos_[j]] + step, joint_low_[j], joint_high_[j]);  // q_des
  }
  mju_cholSolve(solved_.data(), chol_.data(), vel_.data(), 6);
  mju_mulMatTVec(qvel_target_.data(), jac_.data(), solved_.data(), 6, n);
}

void ArmTask::step(mjData* d, const float* action) {
  set_action(d, action);
  const int n_inner = frame_skip_ / ik_every_;
  for (int i = 0; i < n_inner; ++i) {
    ik_update(d, i);
    for (int k = 0; k < ik_every_; ++k) mj_step(m_, d);
  }
  // As ArmEnv.step: derived quantities (site poses, velocities) of the current state for the observation.
  mj_forward(m_, d);
}

double ArmTask::goal_distance(const mjData* d) const {
  const double* goal = d->mocap_pos + 3 * goal_mocap_;
  const double* achieved = goal_is_for_cube_ ? d->qpos + cube_qpos_ : d->site_xpos + 3 * site_;
  return norm3(goal[0] - achieved[0], goal[1] - achieved[1], goal[2] - achieved[2]);
}

double ArmTask::reward(const mjData* d, double distance, bool is_success) const {
  if (sparse_) return is_success ? 0.0 : -1.0;
  if (!goal_is_for_cube_) return -distance;
  const double* cube = d->qpos + cube_qpos_;
  const double* ee = d->site_xpos + 3 * site_;
  return -distance - 0.5 * norm3(cube[0] - ee[0], cube[1] - ee[1], cube[2] - ee[2]);
}

}  // namespace gail_robot
