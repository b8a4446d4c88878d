// meta.json -> PolicyMeta, refusing files this library cannot run faithfully (docs/DESIGN.md §5).
#include <limits>
#include <stdexcept>

#include "backend.hpp"

namespace gail_robot::detail {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// A list of numbers where null stands for -inf (low) or +inf (high); `n` values expected.
std::vector<double> bounds(const json::Value& meta, const std::string& key, std::size_t n, double null_value) {
  std::vector<double> out;
  if (!meta.has(key)) return out;
  const json::Value& v = meta.at(key);
  if (v.kind != json::Value::Kind::Array || (n && v.array.size() != n))
    throw std::runtime_error("meta.json: '" + key + "' must be a list of " + std::to_string(n) + " numbers");
  for (const json::Value& x : v.array) out.push_back(x.number_or(null_value));
  return out;
}
}  // namespace

PolicyMeta parse_meta(const std::string& path, const std::string& text, const std::string& archive_format) {
  PolicyMeta m;
  m.path = path;
  try {
    m.raw = json::parse(text);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": corrupt meta.json (" + e.what() + ")");
  }
  try {
    if (!m.raw.has("format") || m.raw.at("format").as_string() != "gail_robot.policy")
      throw std::runtime_error("not a gail-robot policy (meta.json 'format' is not gail_robot.policy)");
    m.format_version = m.raw.at("format_version").as_int();
    if (m.format_version > kPolicyFormatVersion)
      throw std::runtime_error("written by a newer gail-robot (policy format version " +
                               std::to_string(m.format_version) + "; this library reads up to version " +
                               std::to_string(kPolicyFormatVersion) + "): upgrade gail_robot::policy");
    m.module_format = m.raw.at("module_format").as_string();
    if (m.module_format != archive_format)
      throw std::runtime_error("meta.json says module_format '" + m.module_format + "' but the file holds a " +
                               archive_format + " module (mismatched file)");
    m.env_id = m.raw.has("env_id") && !m.raw.at("env_id").is_null() ? m.raw.at("env_id").as_string() : "";
    m.obs_dim = m.raw.at("obs_dim").as_int();
    m.act_dim = m.raw.at("act_dim").as_int();
    if (m.obs_dim < 1 || m.act_dim < 1) throw std::runtime_error("meta.json: obs_dim and act_dim must be >= 1");
    m.dt = m.raw.at("dt").number_or(0.0);
    m.frame_skip = m.raw.has("frame_skip") ? m.raw.at("frame_skip").as_int() : 1;
    m.timestep = m.raw.has("timestep") ? m.raw.at("timestep").number_or(0.0) : 0.0;
    const auto act_n = static_cast<std::size_t>(m.act_dim);
    m.action_low = bounds(m.raw, "action_low", act_n, -kInf);
    m.action_high = bounds(m.raw, "action_high", act_n, kInf);
    if (m.action_low.size() != act_n || m.action_high.size() != act_n)
      throw std::runtime_error("meta.json: action_low/action_high missing");
    m.obs_low = bounds(m.raw, "obs_low", 0, -kInf);
    m.obs_high = bounds(m.raw, "obs_high", 0, kInf);
    if (m.raw.has("observation_layout") && !m.raw.at("observation_layout").is_null()) {
      int total = 0;
      for (const json::Value& s : m.raw.at("observation_layout").array) {
        ObservationSegment seg;
        seg.field = s.at("field").as_string();
        seg.offset = s.at("offset").as_int();
        seg.size = s.at("size").as_int();
        if (s.has("clip") && !s.at("clip").is_null()) {
          const json::Value& c = s.at("clip");
          if (c.kind != json::Value::Kind::Array || c.array.size() != 2)
            throw std::runtime_error("meta.json: a clip range must be [low, high]");
          seg.clip = true;
          seg.clip_low = c.array[0].number_or(-kInf);
          seg.clip_high = c.array[1].number_or(kInf);
        }
        total += seg.size;
        m.observation_layout.push_back(seg);
      }
      if (total != m.obs_dim)
        throw std::runtime_error("meta.json's observation_layout has " + std::to_string(total) +
                                 " values but obs_dim is " + std::to_string(m.obs_dim) + " (mismatched file)");
    }
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    throw std::runtime_error(what.rfind(path, 0) == 0 ? what : path + ": " + what);
  }
  return m;
}

}  // namespace gail_robot::detail
