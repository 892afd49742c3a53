#include "interop/megatron_checkpoint.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/mapped_file.h"
#include "core/paths.h"
#include "core/strings.h"
#include "interop/torch_archive.h"

#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace mugv {
namespace {

namespace fs = std::filesystem;

constexpr const char* kConfigFile = "metadata.json";
constexpr const char* kCommonFile = "common.pt";
constexpr const char* kTrackerFile = "latest_checkpointed_iteration.txt";

// The int under `key` of a Namespace's __dict__, or 0 when absent or not an int.
int64_t int_attribute(const PickleValue& args, const char* key) {
  const PickleValue* v = args.find(key);
  return v && v->is(PickleKind::integer) ? v->integer : 0;
}

}  // namespace

std::optional<MegatronCheckpointConfig> read_megatron_config(const fs::path& dir) {
  const fs::path path = dir / kConfigFile;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const nlohmann::json j = read_json_file(path);
  MegatronCheckpointConfig c;
  try {
    c.sharded_backend = j.at("sharded_backend").get<std::string>();
    c.sharded_backend_version = j.value("sharded_backend_version", 1);
    c.common_backend = j.value("common_backend", std::string("torch"));
    c.common_backend_version = j.value("common_backend_version", 1);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, path.string(),
                std::string("not a Megatron checkpointing config: ") + e.what());
  }
  return c;
}

void write_megatron_config(const fs::path& dir, const MegatronCheckpointConfig& config) {
  nlohmann::json j;
  j["sharded_backend"] = config.sharded_backend;
  j["sharded_backend_version"] = config.sharded_backend_version;
  j["common_backend"] = config.common_backend;
  j["common_backend_version"] = config.common_backend_version;
  write_json_atomic(dir / kConfigFile, j);
}

MegatronCommonState read_megatron_common(const fs::path& dir) {
  const fs::path path = dir / kCommonFile;
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error(ErrorCode::not_found, path.string(),
                "missing: Megatron cannot load a torch_dist folder without it");
  const MappedFile file = MappedFile::open(path);
  const TorchArchive archive = TorchArchive::parse(file.data(), file.size_bytes(), path.string());
  const PickleValue& root = *archive.root();
  if (!root.is(PickleKind::dict))
    throw Error(ErrorCode::format, path.string(), "holds " + root.describe() + ", not the common state dict");
  MegatronCommonState s;
  if (const PickleValue* it = root.find("iteration"); it && it->is(PickleKind::integer))
    s.iteration = it->integer;
  if (const PickleValue* v = root.find("checkpoint_version")) {
    if (v->is(PickleKind::floating)) s.checkpoint_version = v->floating;
    if (v->is(PickleKind::integer)) s.checkpoint_version = double(v->integer);
  }
  if (const PickleValue* args = root.find("args"); args && args->is(PickleKind::object)) {
    s.has_args = true;
    s.tensor_parallel = int_attribute(*args, "tensor_model_parallel_size");
    s.pipeline_parallel = int_attribute(*args, "pipeline_model_parallel_size");
    s.num_layers = int_attribute(*args, "num_layers");
    s.hidden_size = int_attribute(*args, "hidden_size");
    s.num_attention_heads = int_attribute(*args, "num_attention_heads");
  }
  return s;
}

void write_megatron_common(const fs::path& dir, const MegatronRunArgs& a, int64_t iteration) {
  if (a.tensor_parallel < 1 || a.pipeline_parallel < 1 || a.num_layers < 1 || a.hidden_size < 1 ||
      a.num_attention_heads < 1 || a.hidden_size % a.num_attention_heads != 0)
    throw Error(ErrorCode::invalid_argument, (dir / kCommonFile).string(),
                "run arguments need tp, pp, layers, hidden and heads >= 1, hidden a multiple of heads");
  auto field = [](const char* name, PickleRef value) {
    return std::make_pair(make_string(name), std::move(value));
  };
  // An argparse.Namespace pickles as NEWOBJ of the class with its __dict__ as BUILD state.
  PickleRef args = make_newobj(make_global("argparse", "Namespace"), {},
                               make_dict({
                                   field("tensor_model_parallel_size", make_int(a.tensor_parallel)),
                                   field("pipeline_model_parallel_size", make_int(a.pipeline_parallel)),
                                   field("num_layers", make_int(a.num_layers)),
                                   field("hidden_size", make_int(a.hidden_size)),
                                   field("num_attention_heads", make_int(a.num_attention_heads)),
                                   field("num_query_groups", make_int(a.num_attention_heads)),
                                   field("kv_channels", make_int(a.hidden_size / a.num_attention_heads)),
                                   field("ckpt_format", make_string("torch_dist")),
                                   field("no_save_optim", make_bool(true)),
                                   field("no_save_rng", make_bool(true)),
                                   field("consumed_train_samples", make_int(0)),
                                   field("skipped_train_samples", make_int(0)),
                                   field("consumed_valid_samples", make_int(0)),
                               }));
  const PickleRef root = make_dict({
      field("args", args),
      field("checkpoint_version", make_float(3.0)),
      field("iteration", make_int(iteration)),
  });
  const std::string bytes = save_torch_object(root);
  write_file_atomic(dir / kCommonFile, bytes.data(), bytes.size());
}

fs::path megatron_iteration_dir(const fs::path& root, int64_t iteration) {
  if (iteration < 0)
    throw Error(ErrorCode::invalid_argument, root.string(),
                "negative iteration " + std::to_string(iteration));
  if (iteration == 0) return root / "release";
  char name[32];
  std::snprintf(name, sizeof name, "iter_%07lld", static_cast<long long>(iteration));
  return root / name;
}

void write_megatron_tracker(const fs::path& root, int64_t iteration) {
  if (iteration < 0)
    throw Error(ErrorCode::invalid_argument, root.string(),
                "negative iteration " + std::to_string(iteration));
  write_text_atomic(root / kTrackerFile, iteration == 0 ? std::string("release") : std::to_string(iteration));
}

fs::path resolve_megatron_checkpoint(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path / ".metadata", ec)) return path;
  const fs::path tracker = path / kTrackerFile;
  if (!fs::exists(tracker, ec))
    throw Error(ErrorCode::not_found, path.string(),
                "neither a torch_dist checkpoint folder (no .metadata) nor a Megatron checkpoint root (no " +
                    std::string(kTrackerFile) + ")");
  const std::string text = trim(read_text_file(tracker));
  int64_t iteration = 0;
  if (text != "release") {
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v <= 0)
      throw Error(ErrorCode::format, tracker.string(),
                  "holds '" + text + "', not an iteration > 0 or 'release'");
    iteration = v;
  }
  const fs::path dir = megatron_iteration_dir(path, iteration);
  if (!fs::exists(dir / ".metadata", ec))
    throw Error(ErrorCode::not_found, dir.string(),
                "named by " + tracker.string() + " but holds no torch_dist checkpoint (.metadata)");
  return dir;
}

}  // namespace mugv
