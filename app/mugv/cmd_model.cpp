// mugv convert IN OUT.safetensors [--dtype keep|f32|bf16|f16]: weight files as people have them (dit.pt,
// sharded safetensors, Hugging Face folders) into one safetensors file, a tensor at a time.
// mugv model list: the released models installed under $MUGV_HOME/models, with their sizes.
// Both torch-free: they read shapes and bytes, never build a model.
#include "command.h"

#include "core/dtype_convert.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/release_files.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>

namespace mugv::cli {
namespace {

namespace fs = std::filesystem;

std::optional<DType> target_dtype(const std::string& name) {
  if (name == "keep") return std::nullopt;
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  if (name == "f16") return DType::f16;
  throw Error(ErrorCode::usage, "--dtype", cat("'", name, "' is not keep, f32, bf16 or f16"));
}

int run_convert(const Invocation& inv) {
  const fs::path in = inv.positional[0], out = inv.positional[1];
  if (out.extension() != ".safetensors")
    throw Error(ErrorCode::usage, out.string(), "the output must be a .safetensors file");
  std::error_code ec;
  if (fs::exists(out, ec) && fs::exists(in, ec) && fs::equivalent(in, out, ec))
    throw Error(ErrorCode::usage, out.string(), "the output is the input; write to another file");
  const auto to = target_dtype(inv.values.get_text("convert.dtype"));
  const WeightFiles files = WeightFiles::open(in);

  SafetensorsWriter writer;
  int64_t converted = 0;
  uint64_t bytes_out = 0;
  for (const auto& name : files.names()) {
    const TensorView& view = files.at(name);
    // Only floating-point tensors change type; integer and boolean ones are copied as they are.
    const DType dtype = to && is_float_dtype(view.dtype) ? *to : view.dtype;
    const auto count = static_cast<size_t>(view.numel());
    const size_t bytes = count * dtype_size_bytes(dtype);
    if (dtype != view.dtype) ++converted;
    bytes_out += bytes;
    writer.add_generated(name, dtype, view.shape, bytes,
                         [&files, &view, name, dtype, count](uint8_t* target) {
                           convert_elements(view.dtype, view.data, dtype, target, count);
                           files.release(name);  // the source pages are not needed again
                         });
  }
  for (const auto& [key, value] : files.metadata()) writer.set_metadata(key, value);
  writer.set_metadata("converted_from", fs::path(in).filename().string());
  writer.set_metadata("source_format", to_string(files.format()));
  writer.write(out);

  nlohmann::json result = {{"in", in.string()},
                           {"out", out.string()},
                           {"format", to_string(files.format())},
                           {"tensors", files.size()},
                           {"converted_tensors", converted},
                           {"bytes_in", files.total_bytes()},
                           {"bytes_out", bytes_out}};
  if (inv.json) {
    std::cout << result.dump(2) << "\n";
  } else {
    std::cout << "wrote " << out.string() << ": " << files.size() << " tensors (" << converted
              << " converted), " << human_bytes(double(bytes_out)) << " from " << to_string(files.format())
              << " " << human_bytes(double(files.total_bytes())) << "\n";
  }
  return 0;
}

// 440768 -> "0.44 M", 10.8e9 -> "10.8 B".
std::string human_count(double n) {
  char text[32];
  if (n >= 1e9)
    std::snprintf(text, sizeof text, "%.3g B", n / 1e9);
  else
    std::snprintf(text, sizeof text, "%.3g M", n / 1e6);
  return text;
}

int run_list(const Invocation& inv) {
  const fs::path root =
      inv.values.has("model.models_dir") ? fs::path(inv.values.get_text("model.models_dir")) : models_dir();
  nlohmann::json list = nlohmann::json::array();
  for (const auto& m : list_installed_models(root)) list.push_back(to_json(m));
  if (inv.json) {
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  if (list.empty())
    std::cout << "no models in " << root.string() << " (put a released model's folder there)\n";
  for (const auto& m : list) {
    const auto& dit = m["dit"];
    std::string what = dit.contains("error")
                           ? "DiT unreadable: " + dit["error"].get<std::string>()
                           : cat(human_count(dit["parameters"].get<double>()), "-parameter DiT");
    // What keeps it from being used: a part it lacks, or parts that do not fit each other.
    const std::string problem = m.contains("problem")        ? m["problem"].get<std::string>()
                                : m.contains("preset_error") ? m["preset_error"].get<std::string>()
                                                             : std::string();
    std::printf("%-24s %10s  %s%s\n", m["name"].get<std::string>().c_str(),
                human_bytes(m["bytes"].get<double>()).c_str(), what.c_str(),
                problem.empty() ? "" : ("  (" + problem + ")").c_str());
  }
  return 0;
}

}  // namespace

Command convert_command() {
  Command c;
  c.words = {"convert"};
  c.summary =
      "convert weight files (dit.pt, sharded safetensors, a Hugging Face folder) to one safetensors file";
  c.usage = "IN OUT.safetensors [--dtype keep|f32|bf16|f16]";
  c.min_positional = c.max_positional = 2;
  c.define = [](ParamRegistry& r) {
    auto dtype = param("convert.dtype", "--dtype", ParamType::choice, "keep",
                       "dtype of the floating-point tensors written (integer tensors are kept)", "convert");
    dtype.choices = {"keep", "f32", "bf16", "f16"};
    r.add(dtype);
  };
  c.run = run_convert;
  return c;
}

Command model_list_command() {
  Command c;
  c.words = {"model", "list"};
  c.summary = "released models installed under $MUGV_HOME/models, with their sizes";
  c.usage = "[--models-dir DIR] [--json]";
  c.define = [](ParamRegistry& r) {
    r.add(param("model.models_dir", "--models-dir", ParamType::path, nullptr,
                "where the model folders are (default $MUGV_HOME/models)", "model"));
  };
  c.run = run_list;
  return c;
}

}  // namespace mugv::cli
