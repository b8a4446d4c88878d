// The execution backends behind gail_robot::Policy and the pieces of loading they share.
#pragma once

#include <memory>
#include <string>

#include <gail_robot/policy.hpp>

namespace gail_robot::detail {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const std::string& name() const noexcept = 0;
  virtual bool allocation_free() const noexcept = 0;
  // One observation (obs_dim floats, already checked finite) -> one action (act_dim floats). Returns
  // false when the computation failed (an exception inside libtorch); never throws.
  virtual bool run(const float* obs, float* action) noexcept = 0;
};

// What an exported file holds, read without loading the module.
struct Archive {
  std::string format;     // "torchscript" or "pt2"
  std::string meta_json;  // the text of extra/meta.json
  // pt2 only: extra/native_mlp.json and gail_robot/native_mlp.bin (gail_robot/export/native.py), if present.
  bool has_native_json = false, has_native_blob = false;
  std::string native_json, native_blob;
};

// Opens `path` as a zip archive and finds its format and meta.json; one-line std::runtime_error otherwise.
Archive read_archive(const std::string& path);

// Parses and checks meta.json (format name and version, dims, bounds, layout against obs_dim).
PolicyMeta parse_meta(const std::string& path, const std::string& text, const std::string& archive_format);

// TorchScript: the native kernels when they reproduce the module (unless options say otherwise), else
// the libtorch interpreter. Checks the module's input and output widths against meta.
std::unique_ptr<Backend> load_torchscript(const PolicyMeta& meta, const PolicyOptions& options);
// pt2: the native kernels built from the package's native_mlp records when they reproduce the AOTI
// module, else libtorch's AOTInductor package runner; checks the module's widths against meta.
std::unique_ptr<Backend> load_pt2(const PolicyMeta& meta, const Archive& archive, const PolicyOptions& options);

}  // namespace gail_robot::detail
