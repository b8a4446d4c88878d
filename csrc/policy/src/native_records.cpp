// A pt2 package's native MLP records (extra/native_mlp.json + gail_robot/native_mlp.bin, written by
// gail_robot/export/native.py) -> NativeMlpSpec. No libtorch here: the AOTInductor module holds its
// weights inside a compiled library, so the exporter stores them beside it (docs/DESIGN.md §5.1).
#include <gail_robot/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "native_mlp.hpp"

namespace gail_robot::detail {

namespace {

std::string fnv1a64(const std::string& data) {  // gail_robot.export.native.fnv1a64
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) h = (h ^ c) * 0x100000001b3ULL;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// Reads little-endian values off the blob in order (x86-64 and aarch64 Linux are little-endian).
class BlobReader {
 public:
  explicit BlobReader(const std::string& blob) : blob_(blob) {}
  template <typename T>
  std::vector<T> take(std::size_t n) {
    std::vector<T> out(n);
    const std::size_t bytes = n * sizeof(T);
    if (at_ + bytes > blob_.size()) throw std::runtime_error("the weight blob is shorter than its description");
    if (bytes) std::memcpy(out.data(), blob_.data() + at_, bytes);
    at_ += bytes;
    return out;
  }
  bool done() const { return at_ == blob_.size(); }

 private:
  const std::string& blob_;
  std::size_t at_ = 0;
};

Activation activation(const std::string& name) {
  if (name == "tanh") return Activation::kTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "elu") return Activation::kElu;
  if (name == "silu") return Activation::kSilu;
  throw std::runtime_error("unknown activation '" + name + "'");
}

}  // namespace

bool native_spec_from_records(const std::string& path, const std::string& description, const std::string* blob,
                              int obs_dim, int act_dim, NativeMlpSpec* spec, std::string* why_not) {
  const std::string prefix = path + ": corrupt native weights in the package (";
  json::Value d;
  try {
    d = json::parse(description);
    if (d.at("format").as_string() != "gail_robot.native_mlp")
      throw std::runtime_error("format is not gail_robot.native_mlp");
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + "extra/native_mlp.json: " + e.what() + ")");
  }
  const int version = d.at("version").as_int();
  if (version > 1)
    throw std::runtime_error(path + ": written by a newer gail-robot (native_mlp version " +
                             std::to_string(version) + "; this library reads up to version 1): upgrade "
                             "gail_robot::policy");
  if (d.has("why_not")) {
    *why_not = d.at("why_not").as_string();
    return false;
  }
  if (blob == nullptr) throw std::runtime_error(prefix + "gail_robot/native_mlp.bin is missing)");
  try {
    if (d.at("obs_dim").as_int() != obs_dim || d.at("act_dim").as_int() != act_dim)
      throw std::runtime_error("its dims differ from meta.json's");
    if (static_cast<std::size_t>(d.at("blob_bytes").as_number()) != blob->size())
      throw std::runtime_error("gail_robot/native_mlp.bin has " + std::to_string(blob->size()) + " bytes, " +
                               std::to_string(d.at("blob_bytes").as_int()) + " expected");
    if (fnv1a64(*blob) != d.at("blob_fnv1a64").as_string())
      throw std::runtime_error("gail_robot/native_mlp.bin fails its checksum");
    BlobReader r(*blob);
    const auto obs_n = static_cast<std::size_t>(obs_dim), act_n = static_cast<std::size_t>(act_dim);
    spec->obs_mean = r.take<double>(obs_n);
    spec->obs_std = r.take<double>(obs_n);
    spec->obs_clip = d.at("obs_clip").as_number();
    spec->action_low = r.take<float>(act_n);
    spec->action_high = r.take<float>(act_n);
    spec->action_range = r.take<float>(act_n);
    spec->tanh_head = d.at("tanh_head").as_bool();
    for (const json::Value& l : d.at("layers").array) {
      NativeLayer layer;
      layer.n_in = l.at("n_in").as_int();
      layer.n_out = l.at("n_out").as_int();
      if (layer.n_in <= 0 || layer.n_out <= 0) throw std::runtime_error("a layer has no width");
      layer.w = r.take<float>(static_cast<std::size_t>(layer.n_in) * static_cast<std::size_t>(layer.n_out));
      layer.b = r.take<float>(static_cast<std::size_t>(layer.n_out));
      spec->layers.push_back(std::move(layer));
    }
    for (const json::Value& a : d.at("activations").array) spec->activations.push_back(activation(a.as_string()));
    if (!r.done()) throw std::runtime_error("the weight blob is longer than its description");
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what() + ")");
  }
  return true;
}

}  // namespace gail_robot::detail
