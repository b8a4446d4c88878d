#include "locomotion.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace gail_robot {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// Reads [lo, hi] from meta.json, where null stands for an infinite bound.
void read_range(const json::Value& v, double* lo, double* hi) {
  if (v.kind != json::Value::Kind::Array || v.array.size() != 2)
    throw std::runtime_error("meta.json: a range must be [low, high]");
  *lo = v.array[0].number_or(-kInf);
  *hi = v.array[1].number_or(kInf);
}
}  // namespace

ObservationBuilder::ObservationBuilder(const mjModel* m, const json::Value& layout, int obs_dim) : m_(m) {
  if (layout.kind != json::Value::Kind::Array)
    throw std::runtime_error("meta.json: this policy has no observation_layout (not a supported v5 env)");
  int total = 0;
  for (const json::Value& s : layout.array) {
    ObsSegment seg;
    seg.field = s.at("field").as_string();
    seg.offset = s.at("offset").as_int();
    seg.size = s.at("size").as_int();
    if (s.has("clip") && !s.at("clip").is_null()) {
      seg.clip = true;
      read_range(s.at("clip"), &seg.clip_low, &seg.clip_high);
    }
    const int available = field_size(seg.field);
    if (seg.offset < 0 || seg.size < 0 || seg.offset + seg.size > available)
      throw std::runtime_error("observation segment " + seg.field + "[" + std::to_string(seg.offset) + ":" +
                               std::to_string(seg.offset + seg.size) + "] does not fit this model (size " +
                               std::to_string(available) + ")");
    total += seg.size;
    segments_.push_back(seg);
  }
  if (total != obs_dim)
    throw std::runtime_error("observation layout has " + std::to_string(total) + " values, the policy expects " +
                             std::to_string(obs_dim));
}

int ObservationBuilder::field_size(const std::string& field) const {
  if (field == "qpos") return m_->nq;
  if (field == "qvel" || field == "qfrc_actuator") return m_->nv;
  if (field == "cinert") return 10 * m_->nbody;
  if (field == "cvel" || field == "cfrc_ext") return 6 * m_->nbody;
  throw std::runtime_error("unknown observation field '" + field + "'");
}

const mjtNum* ObservationBuilder::field_ptr(const mjData* d, const std::string& field) const {
  if (field == "qpos") return d->qpos;
  if (field == "qvel") return d->qvel;
  if (field == "qfrc_actuator") return d->qfrc_actuator;
  if (field == "cinert") return d->cinert;
  if (field == "cvel") return d->cvel;
  if (field == "cfrc_ext") return d->cfrc_ext;
  throw std::runtime_error("unknown observation field '" + field + "'");
}

void ObservationBuilder::build(const mjData* d, float* out) const {
  for (const ObsSegment& seg : segments_) {
    const mjtNum* src = field_ptr(d, seg.field) + seg.offset;
    if (seg.clip) {
      for (int i = 0; i < seg.size; ++i)
        *out++ = static_cast<float>(std::min(std::max(src[i], seg.clip_low), seg.clip_high));
    } else {
      for (int i = 0; i < seg.size; ++i) *out++ = static_cast<float>(src[i]);
    }
  }
}

LocomotionTask::LocomotionTask(const mjModel* m, const json::Value& task) : m_(m) {
  family_ = task.at("family").as_string();
  if (family_ != "hopper" && family_ != "walker2d" && family_ != "half_cheetah" && family_ != "ant" &&
      family_ != "humanoid")
    throw std::runtime_error("unsupported task family '" + family_ + "'");
  forward_w_ = task.at("forward_reward_weight").as_number();
  ctrl_w_ = task.at("ctrl_cost_weight").as_number();
  if (task.has("healthy_reward")) healthy_reward_ = task.at("healthy_reward").as_number();
  if (task.has("terminate_when_unhealthy")) terminate_when_unhealthy_ = task.at("terminate_when_unhealthy").as_bool();
  if (task.has("healthy_z_range")) read_range(task.at("healthy_z_range"), &z_lo_, &z_hi_);
  if (task.has("healthy_angle_range")) {
    has_angle_range_ = true;
    read_range(task.at("healthy_angle_range"), &angle_lo_, &angle_hi_);
  }
  if (task.has("healthy_state_range")) {
    has_state_range_ = true;
    read_range(task.at("healthy_state_range"), &state_lo_, &state_hi_);
  }
  if (task.has("contact_cost_weight")) contact_w_ = task.at("contact_cost_weight").as_number();
  if (task.has("contact_force_range")) read_range(task.at("contact_force_range"), &contact_force_lo_, &contact_force_hi_);
  if (task.has("contact_cost_range")) read_range(task.at("contact_cost_range"), &contact_cost_lo_, &contact_cost_hi_);
  if (task.has("main_body")) main_body_ = task.at("main_body").as_int();
  if (main_body_ < 0 || main_body_ >= m_->nbody) throw std::runtime_error("meta.json: main_body out of range");
}

void LocomotionTask::position(const mjData* d, double* x, double* y) const {
  if (family_ == "ant") {
    // Ant-v5: the main body's xpos (a torso body position, not qpos).
    *x = d->xpos[3 * main_body_];
    *y = d->xpos[3 * main_body_ + 1];
  } else if (family_ == "humanoid") {
    // Humanoid-v5: the mass-weighted mean of the bodies' inertial frames (mass_center()).
    double num_x = 0.0, num_y = 0.0, mass = 0.0;
    for (int b = 0; b < m_->nbody; ++b) {
      num_x += m_->body_mass[b] * d->xipos[3 * b];
      num_y += m_->body_mass[b] * d->xipos[3 * b + 1];
      mass += m_->body_mass[b];
    }
    *x = num_x / mass;
    *y = num_y / mass;
  } else {
    // Hopper / Walker2d / HalfCheetah: the root slide joint.
    *x = d->qpos[0];
    *y = 0.0;
  }
}

void LocomotionTask::before_step(const mjData* d) { position(d, &x_before_, &y_before_); }

bool LocomotionTask::healthy(const mjData* d) const {
  if (family_ == "half_cheetah") return true;
  if (family_ == "hopper" || family_ == "walker2d") {
    const double z = d->qpos[1], angle = d->qpos[2];
    if (!(z_lo_ < z && z < z_hi_)) return false;
    if (has_angle_range_ && !(angle_lo_ < angle && angle < angle_hi_)) return false;
    if (has_state_range_) {
      // Hopper-v5: state_vector()[2:], i.e. qpos[2:] then all of qvel.
      for (int i = 2; i < m_->nq; ++i)
        if (!(state_lo_ < d->qpos[i] && d->qpos[i] < state_hi_)) return false;
      for (int i = 0; i < m_->nv; ++i)
        if (!(state_lo_ < d->qvel[i] && d->qvel[i] < state_hi_)) return false;
    }
    return true;
  }
  if (family_ == "ant") {
    // Ant-v5: finite state and an inclusive z range.
    for (int i = 0; i < m_->nq; ++i)
      if (!std::isfinite(d->qpos[i])) return false;
    for (int i = 0; i < m_->nv; ++i)
      if (!std::isfinite(d->qvel[i])) return false;
    return z_lo_ <= d->qpos[2] && d->qpos[2] <= z_hi_;
  }
  // Humanoid-v5: exclusive z range on the root height.
  return z_lo_ < d->qpos[2] && d->qpos[2] < z_hi_;
}

double LocomotionTask::reward(const mjData* d, const float* action, int act_dim, double dt) const {
  double x_after = 0.0, y_after = 0.0;
  position(d, &x_after, &y_after);
  const double x_velocity = (x_after - x_before_) / dt;
  double reward = forward_w_ * x_velocity;

  // Control cost: Humanoid-v5 charges data.ctrl, the others the action they were given; both
  // are the clipped policy output here.
  double ctrl_sq = 0.0;
  if (family_ == "humanoid") {
    for (int i = 0; i < m_->nu; ++i) ctrl_sq += d->ctrl[i] * d->ctrl[i];
  } else {
    for (int i = 0; i < act_dim; ++i) ctrl_sq += static_cast<double>(action[i]) * action[i];
  }
  reward -= ctrl_w_ * ctrl_sq;

  if (family_ != "half_cheetah") reward += healthy(d) ? healthy_reward_ : 0.0;

  if (family_ == "ant") {
    double sq = 0.0;
    for (int i = 0; i < 6 * m_->nbody; ++i) {
      const double f = std::min(std::max(d->cfrc_ext[i], contact_force_lo_), contact_force_hi_);
      sq += f * f;
    }
    reward -= contact_w_ * sq;
  } else if (family_ == "humanoid") {
    double sq = 0.0;
    for (int i = 0; i < 6 * m_->nbody; ++i) sq += d->cfrc_ext[i] * d->cfrc_ext[i];
    reward -= std::min(std::max(contact_w_ * sq, contact_cost_lo_), contact_cost_hi_);
  }
  return reward;
}

}  // namespace gail_robot
