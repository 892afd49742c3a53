// mugv megatron import CHECKPOINT OUT.safetensors: the DiT weights of a Megatron torch_dist checkpoint of
// MUG-V (a checkpoint root with its tracker file, an iter_N / release folder, or a bare torch_dist folder) as
// one safetensors file with this engine's (the released dit.pt's) names, ready to be a model folder's
// dit.safetensors.
// mugv megatron export SOURCE ROOT: DiT weights (a weight file or model folder, or --run RUN for a run's
// checkpoint) written as a Megatron checkpoint root that Megatron-based training loads as a release
// checkpoint. Both torch-free (backend/interop, docs/INTEROP.md); tensors are streamed one at a time.
#include "command.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "interop/megatron_convert.h"
#include "model/release_files.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

namespace mugv::cli {
namespace {

namespace fs = std::filesystem;

void print_names(const char* what, const std::vector<std::string>& names) {
  if (names.empty()) return;
  std::cout << what << " (" << names.size() << "):";
  for (size_t i = 0; i < names.size() && i < 8; ++i) std::cout << " " << names[i];
  std::cout << (names.size() > 8 ? " ...\n" : "\n");
}

int run_import(const Invocation& inv) {
  const fs::path checkpoint = inv.positional[0], out = inv.positional[1];
  if (out.extension() != ".safetensors")
    throw Error(ErrorCode::usage, out.string(), "the output must be a .safetensors file");
  MegatronImportOptions options;
  options.num_heads = static_cast<int>(inv.values.get_int("megatron.heads"));
  options.allow_unknown = inv.values.get_bool("megatron.allow_unknown");
  const MegatronImportPlan plan = import_megatron_to_safetensors(checkpoint, out, options);
  if (inv.json) {
    std::cout << nlohmann::json{{"out", out.string()},       {"tensors", plan.items.size()},
                                {"layers", plan.num_layers}, {"heads", plan.num_heads},
                                {"skipped", plan.skipped},   {"unknown", plan.unknown}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "wrote " << out.string() << ": " << plan.items.size() << " tensors, " << plan.num_layers
            << " blocks, " << plan.num_heads << " heads\n";
  print_names("skipped (optimizer, RNG and extra state)", plan.skipped);
  print_names("unknown, left out", plan.unknown);
  return 0;
}

// The whole-tensor weights file of a run's checkpoint ("model" or "ema"); sharded checkpoints are refused:
// joining tensor-parallel pieces needs the training stack (`mugv resume` in one process writes whole ones).
fs::path run_weights_file(const std::string& run, const Invocation& inv) {
  CheckpointStore store(run_paths(run).checkpoints());
  std::optional<CheckpointRef> ref;
  if (inv.values.has("megatron.step"))
    ref = store.open(inv.values.get_int("megatron.step"));
  else
    ref = store.latest_good();
  if (!ref) throw Error(ErrorCode::not_found, run, "has no usable checkpoint");
  if (auto problem = store.verify(ref->dir)) throw Error(ErrorCode::corrupt, ref->dir.string(), *problem);
  std::error_code ec;
  if (fs::exists(ref->dir / "layout.json", ec)) {
    const auto layout = read_json_file(ref->dir / "layout.json");
    if (layout.value("tp", 1) > 1 || layout.value("pp", 1) > 1)
      throw Error(ErrorCode::unsupported, ref->dir.string(),
                  "was written by a tensor-parallel or pipeline run; resume it once in one process "
                  "(`mugv resume RUN --tp 1 --pp 1`) to write whole tensors");
  }
  const std::string stem = inv.values.get_text("megatron.weights");
  const fs::path file = ref->dir / (stem + ".safetensors");
  if (!fs::is_regular_file(file, ec)) throw Error(ErrorCode::not_found, file.string(), "is missing");
  return file;
}

// The DiT tensors of a run checkpoint, named as in the release ("dit." removed; the text encoder left out).
WeightSource dit_part(const WeightFiles& files) {
  static const std::string kPrefix = "dit.";
  WeightSource source;
  for (const auto& name : files.names())
    if (starts_with(name, kPrefix)) source.names.push_back(name.substr(kPrefix.size()));
  source.at = [&files](const std::string& name) { return files.at(kPrefix + name); };
  source.release = [&files](const std::string& name) { files.release(kPrefix + name); };
  return source;
}

int run_export(const Invocation& inv) {
  const bool from_run = inv.values.has("megatron.run");
  if (from_run != (inv.positional.size() == 1))
    throw Error(ErrorCode::usage, "megatron export", "give either SOURCE ROOT or --run RUN ROOT");
  const fs::path root = inv.positional.back();
  fs::path source_path;
  if (from_run) {
    source_path = run_weights_file(inv.values.get_text("megatron.run"), inv);
  } else {
    source_path = inv.positional[0];
    std::error_code ec;
    if (fs::is_directory(source_path, ec)) source_path = find_release_model(source_path).dit;
  }
  const WeightFiles files = WeightFiles::open(source_path);
  const WeightSource source = from_run ? dit_part(files) : weight_source(files);
  MegatronExportOptions options;
  options.tensor_parallel = static_cast<int>(inv.values.get_int("megatron.tp"));
  options.pipeline_parallel = inv.values.get_int("megatron.pp");
  options.iteration = inv.values.get_int("megatron.iteration");
  options.file_per_rank = inv.values.get_bool("megatron.file_per_rank");
  options.overwrite = inv.values.get_bool("megatron.overwrite");
  options.num_heads = static_cast<int>(inv.values.get_int("megatron.heads"));
  const MegatronExportReport report = export_megatron_checkpoint(source, root, options);
  if (inv.json) {
    std::cout << nlohmann::json{{"checkpoint", report.checkpoint.string()},
                                {"source", source_path.string()},
                                {"written", report.written.size()},
                                {"layers", report.num_layers},
                                {"heads", report.num_heads},
                                {"notes", report.notes}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "wrote " << report.checkpoint.string() << " from " << source_path.string() << ": "
            << report.written.size() << " entries, " << report.num_layers << " blocks, " << report.num_heads
            << " heads\n";
  for (const auto& note : report.notes) std::cout << "note: " << note << "\n";
  return 0;
}

// An integer parameter with a lower bound.
ParamSpec bounded(std::string key, std::string flag, nlohmann::json default_value, std::string help,
                  double minimum) {
  ParamSpec spec = param(std::move(key), std::move(flag), ParamType::integer, std::move(default_value),
                         std::move(help), "megatron");
  spec.min_value = minimum;
  return spec;
}

void define_heads(ParamRegistry& r) {
  r.add(bounded("megatron.heads", "--heads", 0,
                "attention heads (0: from the checkpoint's args or the q-norm width)", 0.0));
}

}  // namespace

Command megatron_import_command() {
  Command c;
  c.words = {"megatron", "import"};
  c.summary = "the DiT weights of a Megatron torch_dist checkpoint as one safetensors file (release names)";
  c.usage = "CHECKPOINT OUT.safetensors [--heads N] [--allow-unknown]";
  c.min_positional = c.max_positional = 2;
  c.define = [](ParamRegistry& r) {
    define_heads(r);
    r.add(param("megatron.allow_unknown", "--allow-unknown", ParamType::boolean, false,
                "list tensors outside the MUG-V name map instead of refusing the checkpoint", "megatron"));
  };
  c.run = run_import;
  return c;
}

Command megatron_export_command() {
  Command c;
  c.words = {"megatron", "export"};
  c.summary = "DiT weights (a file, a model folder or a run) as a Megatron torch_dist checkpoint root";
  c.usage =
      "SOURCE ROOT | --run RUN ROOT [--step N] [--weights ema|model] [--tp N] [--pp N] [--iteration N] "
      "[--file-per-rank] [--overwrite]";
  c.min_positional = 1;
  c.max_positional = 2;
  c.define = [](ParamRegistry& r) {
    define_heads(r);
    r.add(
        param("megatron.run", "--run", ParamType::text, nullptr, "export this run's checkpoint", "megatron"));
    r.add(bounded("megatron.step", "--step", nullptr, "the run's checkpoint step (default: latest)", 1.0));
    auto weights = param("megatron.weights", "--weights", ParamType::choice, "ema",
                         "which weights of the run's checkpoint", "megatron");
    weights.choices = {"ema", "model"};
    r.add(weights);
    r.add(bounded("megatron.tp", "--tp", 1,
                  "tensor parallelism the chunks are cut for (whole heads per rank)", 1.0));
    r.add(bounded("megatron.pp", "--pp", 1, "pipeline stages recorded in the args", 1.0));
    r.add(bounded("megatron.iteration", "--iteration", 0, "0: a release checkpoint; else iter_N", 0.0));
    r.add(param("megatron.file_per_rank", "--file-per-rank", ParamType::boolean, false,
                "each tensor-parallel rank's chunks in its own .distcp file", "megatron"));
    r.add(param("megatron.overwrite", "--overwrite", ParamType::boolean, false,
                "replace a checkpoint already in the iteration folder", "megatron"));
  };
  c.run = run_export;
  return c;
}

}  // namespace mugv::cli
