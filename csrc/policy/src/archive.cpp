// Which format an exported file holds and its meta.json, read from the zip archive without loading the
// module: the rule of gail_robot.policy_io.exported_format (docs/DESIGN.md §5), in C++.
#include <caffe2/serialize/inline_container.h>

#include <fstream>
#include <stdexcept>

#include "backend.hpp"

namespace gail_robot::detail {

namespace {
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

Archive read_archive(const std::string& path) {
  if (!std::ifstream(path).good()) throw std::runtime_error("cannot open policy " + path + ": no such file");
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::exception&) {
    throw std::runtime_error(path + " is not an exported gail-robot policy (not a TorchScript or pt2 archive)");
  }
  // Record names are relative to the archive's top folder (whatever name the file had when written).
  bool aoti = false, code = false, constants = false;
  for (const std::string& name : reader->getAllRecords()) {
    aoti = aoti || name.rfind("data/aotinductor/", 0) == 0;
    code = code || name.rfind("code/", 0) == 0;
    constants = constants || ends_with(name, "constants.pkl");
  }
  Archive archive;
  if (aoti) archive.format = "pt2";
  else if (code && constants) archive.format = "torchscript";
  else throw std::runtime_error(path + " is not an exported gail-robot policy (not a TorchScript or pt2 archive)");
  if (!reader->hasRecord("extra/meta.json"))
    throw std::runtime_error(path + " has no meta.json (not exported by gail-robot)");
  auto [data, size] = reader->getRecord("extra/meta.json");
  archive.meta_json.assign(static_cast<const char*>(data.get()), size);
  if (archive.format == "pt2") {
    auto read = [&](const char* name, bool* has, std::string* text) {
      if (!reader->hasRecord(name)) return;
      try {
        auto [bytes, n] = reader->getRecord(name);
        text->assign(static_cast<const char*>(bytes.get()), n);
      } catch (const std::exception&) {  // e.g. a CRC error of a damaged archive
        throw std::runtime_error(path + ": corrupt native weights in the package (" + name + " is unreadable)");
      }
      *has = true;
    };
    read("extra/native_mlp.json", &archive.has_native_json, &archive.native_json);
    read("gail_robot/native_mlp.bin", &archive.has_native_blob, &archive.native_blob);
  }
  return archive;
}

}  // namespace gail_robot::detail
