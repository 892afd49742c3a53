#include "interop/megatron_convert.h"

#include "core/error.h"
#include "core/weight_files.h"
#include "interop/megatron_checkpoint.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <system_error>

namespace mugv {
namespace {

namespace fs = std::filesystem;

// More layers than any DiT has; a stacked key's leading axis beyond this is a damaged checkpoint.
constexpr int kMaxLayers = 4096;

std::string vec_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string name_list(const std::vector<std::string>& names, size_t at_most = 12) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < at_most; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > at_most) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

// The slab [start, start + length) of `t` along `axis`, contiguous.
TensorData slice_axis(const TensorData& t, size_t axis, int64_t start, int64_t length) {
  const size_t elem = dtype_size_bytes(t.dtype);
  size_t outer = 1, inner = elem;
  for (size_t k = 0; k < axis; ++k) outer *= size_t(t.shape[k]);
  for (size_t k = axis + 1; k < t.shape.size(); ++k) inner *= size_t(t.shape[k]);
  TensorData out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.shape[axis] = length;
  out.bytes.resize(outer * size_t(length) * inner);
  for (size_t o = 0; o < outer; ++o)
    std::memcpy(out.bytes.data() + o * size_t(length) * inner,
                t.bytes.data() + (o * size_t(t.shape[axis]) + size_t(start)) * inner, size_t(length) * inner);
  return out;
}

// hidden / head_dim from the widths of a hidden-sized and a per-head tensor; 0 when either is missing.
int heads_from_widths(int64_t hidden, int64_t head_dim) {
  if (hidden <= 0 || head_dim <= 0 || hidden % head_dim != 0) return 0;
  return int(hidden / head_dim);
}

}  // namespace

// ---- import -------------------------------------------------------------------------------------------

MegatronImportPlan plan_megatron_import(const DistCheckpointReader& ckpt,
                                        const MegatronImportOptions& options) {
  MegatronImportPlan plan;
  const std::string subject = ckpt.dir().string();
  bool needs_heads = false;
  int64_t hidden = 0, head_dim = 0;
  std::set<int> per_layer;
  for (const auto& [name, t] : ckpt.tensors()) {
    const MegatronKeyRole role = megatron_key_role(name);
    if (role != MegatronKeyRole::weight) {
      if (role == MegatronKeyRole::unknown) {
        plan.unknown.push_back(name);
      } else {
        plan.skipped.push_back(name);
      }
      continue;
    }
    if (name == "context_embedder.drop_emb" && !options.null_caption) {
      plan.skipped.push_back(name);
      continue;
    }
    if (name == "x_embedder.proj.weight" && !t.shape.empty()) hidden = t.shape[0];
    if (is_stacked_layer_key(name)) {
      if (t.shape.empty())
        throw Error(ErrorCode::format, subject, "'" + name + "' is a scalar, not stacked over layers");
      // The plan holds an item per layer: a leading axis of a billion (possible with no bytes behind it,
      // when another axis is 0) must not become a billion items.
      if (t.shape[0] <= 0 || t.shape[0] > kMaxLayers)
        throw Error(ErrorCode::format, subject,
                    "'" + name + "' stacks " + std::to_string(t.shape[0]) + " layers; 1 to " +
                        std::to_string(kMaxLayers) + " are read");
      if (plan.num_layers != 0 && plan.num_layers != t.shape[0])
        throw Error(ErrorCode::format, subject,
                    "'" + name + "' stacks " + std::to_string(t.shape[0]) + " layers, other keys " +
                        std::to_string(plan.num_layers));
      plan.num_layers = int(t.shape[0]);
      const std::vector<int64_t> shape(t.shape.begin() + 1, t.shape.end());
      if (name == "decoder.layers.self_attention.q_layernorm.weight" && !shape.empty())
        head_dim = shape.back();
      for (int layer = 0; layer < plan.num_layers; ++layer) {
        const auto key = engine_key_for(name, layer);
        plan.items.push_back({key->name, name, layer, key->heads, t.dtype, shape});
        needs_heads |= key->heads != HeadLayout::none;
      }
    } else {
      const auto key = engine_key_for(name);
      plan.items.push_back({key->name, name, -1, key->heads, t.dtype, t.shape});
      needs_heads |= key->heads != HeadLayout::none;
      if (name.rfind("decoder.layers.", 0) == 0) {
        per_layer.insert(std::atoi(name.c_str() + std::strlen("decoder.layers.")));
        if (name.find(".self_attention.q_layernorm.weight") != std::string::npos && !t.shape.empty())
          head_dim = t.shape.back();
      }
    }
  }
  for (const auto& [name, o] : ckpt.objects()) plan.skipped.push_back(name);
  if (!per_layer.empty()) {
    if (*per_layer.rbegin() >= kMaxLayers)
      throw Error(ErrorCode::format, subject,
                  "a key of layer " + std::to_string(*per_layer.rbegin()) + "; layers 0 to " +
                      std::to_string(kMaxLayers - 1) + " are read");
    plan.num_layers = std::max(plan.num_layers, *per_layer.rbegin() + 1);
  }
  if (!plan.unknown.empty() && !options.allow_unknown)
    throw Error(ErrorCode::unsupported, subject,
                "tensors outside the MUG-V DiT name map: " + name_list(plan.unknown) +
                    " (not a MUG-V DiT checkpoint, or a newer layout)");

  plan.num_heads = options.num_heads;
  if (plan.num_heads <= 0) {
    std::error_code ec;
    if (fs::exists(ckpt.dir() / "common.pt", ec))
      plan.num_heads = int(read_megatron_common(ckpt.dir()).num_attention_heads);
  }
  if (plan.num_heads <= 0) plan.num_heads = heads_from_widths(hidden, head_dim);
  if (needs_heads && plan.num_heads <= 0)
    throw Error(ErrorCode::invalid_argument, subject,
                "cannot tell the number of attention heads (no common.pt args, no q_layernorm); give it");
  return plan;
}

TensorData read_megatron_tensor(const DistCheckpointReader& ckpt, const MegatronImportPlan& plan,
                                const MegatronImportItem& item) {
  TensorData t;
  if (item.layer >= 0) {
    const DistTensor* stacked = ckpt.find(item.megatron_name);
    if (!stacked)
      throw Error(ErrorCode::not_found, ckpt.dir().string(), "no tensor '" + item.megatron_name + "'");
    std::vector<int64_t> offsets(stacked->shape.size(), 0), sizes = stacked->shape;
    offsets[0] = item.layer;
    sizes[0] = 1;
    t = ckpt.read_region(item.megatron_name, offsets, sizes);
    t.shape.erase(t.shape.begin());
  } else {
    t = ckpt.read(item.megatron_name);
  }
  TensorData out =
      heads_to_engine(t, item.heads, plan.num_heads, ckpt.dir().string() + " '" + item.megatron_name + "'");
  // The item's dtype and shape are what callers size their buffers by (import_megatron_to_safetensors).
  if (out.dtype != item.dtype || out.shape != item.shape)
    throw Error(ErrorCode::invalid_argument, ckpt.dir().string(),
                "'" + item.megatron_name + "' reads as " + to_string(out.dtype) + " " + vec_text(out.shape) +
                    " for " + item.engine_name + ", the plan says " + to_string(item.dtype) + " " +
                    vec_text(item.shape) + " (a plan made for another checkpoint?)");
  return out;
}

MegatronImportPlan import_megatron_to_safetensors(const fs::path& checkpoint, const fs::path& out,
                                                  const MegatronImportOptions& options) {
  const DistCheckpointReader ckpt = DistCheckpointReader::open(resolve_megatron_checkpoint(checkpoint));
  MegatronImportPlan plan = plan_megatron_import(ckpt, options);
  SafetensorsWriter writer;
  for (const auto& item : plan.items) {
    size_t bytes = dtype_size_bytes(item.dtype);
    for (int64_t d : item.shape) bytes *= size_t(d);
    // Read while the writer streams this tensor, so memory holds one tensor at a time.
    writer.add_generated(
        item.engine_name, item.dtype, item.shape, bytes, [&ckpt, &plan, &item, bytes](uint8_t* dst) {
          const TensorData t = read_megatron_tensor(ckpt, plan, item);
          // The plan's shape and dtype come from the metadata; the bytes from the chunks.
          if (t.bytes.size() != bytes)
            throw Error(ErrorCode::corrupt, ckpt.dir().string(),
                        "'" + item.megatron_name + "' read as " + std::to_string(t.bytes.size()) +
                            " bytes for " + item.engine_name + ", the plan says " + to_string(item.dtype) +
                            " " + vec_text(item.shape) + ", " + std::to_string(bytes) + " bytes");
          std::memcpy(dst, t.bytes.data(), bytes);
        });
  }
  writer.set_metadata("format", "pt");
  writer.write(out);
  return plan;
}

// ---- export -------------------------------------------------------------------------------------------

WeightSource weight_source(const WeightFiles& files) {
  WeightSource s;
  s.names = files.names();
  s.at = [&files](const std::string& name) { return files.at(name); };
  s.release = [&files](const std::string& name) { files.release(name); };
  return s;
}

MegatronExportReport export_megatron_checkpoint(const WeightSource& source, const fs::path& root,
                                                const MegatronExportOptions& options) {
  const std::string subject = root.string();
  if (options.tensor_parallel < 1 || options.pipeline_parallel < 1)
    throw Error(ErrorCode::invalid_argument, subject, "tensor and pipeline parallel sizes must be >= 1");
  MegatronExportReport report;

  // Plan: every name's key; stacked keys gathered per layer.
  struct Planned {
    std::string engine;
    MegatronKey key;
  };
  std::vector<Planned> planned;
  std::map<std::string, std::map<int, std::string>> layers_of;  // stacked key -> layer -> engine name
  int num_layers = 0;
  for (const auto& name : source.names) {
    auto key = megatron_key_for(name);
    if (!key) {
      report.unknown.push_back(name);
      continue;
    }
    if (key->layer >= 0) {
      layers_of[key->name][key->layer] = name;
      num_layers = std::max(num_layers, key->layer + 1);
    }
    planned.push_back({name, *key});
  }
  if (!report.unknown.empty() && !options.allow_unknown)
    throw Error(ErrorCode::invalid_argument, subject,
                "weights outside the MUG-V DiT name map: " + name_list(report.unknown));
  std::vector<std::string> missing;
  for (const auto& [key, layers] : layers_of)
    for (int i = 0; i < num_layers; ++i)
      if (!layers.count(i)) missing.push_back("layer " + std::to_string(i) + " of " + key);
  if (!missing.empty())
    throw Error(ErrorCode::invalid_argument, subject, "blocks missing tensors: " + name_list(missing));

  // Shapes that fix the run arguments and the head count.
  auto shape_of = [&](const char* name) -> std::vector<int64_t> {
    if (std::find(source.names.begin(), source.names.end(), name) == source.names.end()) return {};
    return source.at(name).shape;
  };
  const auto embed = shape_of("x_embedder.proj.weight");
  const int64_t hidden = embed.empty() ? 0 : embed[0];
  const auto q_norm = shape_of("blocks.0.attn.q_norm.weight");
  report.num_heads = options.num_heads > 0 ? options.num_heads
                                           : heads_from_widths(hidden, q_norm.empty() ? 0 : q_norm.back());
  report.num_layers = num_layers;
  if (report.num_heads <= 0 || hidden <= 0)
    throw Error(
        ErrorCode::invalid_argument, subject,
        "cannot tell hidden size and heads (x_embedder.proj.weight, blocks.0.attn.q_norm.weight); give "
        "num_heads");
  if (report.num_heads % options.tensor_parallel != 0)
    throw Error(ErrorCode::invalid_argument, subject,
                std::to_string(report.num_heads) + " heads do not split over tensor parallel size " +
                    std::to_string(options.tensor_parallel));

  report.checkpoint = megatron_iteration_dir(root, options.iteration);
  DistCheckpointWriter writer(report.checkpoint, DistCheckpointWriter::Options{options.overwrite});
  std::set<std::string> written;
  for (const auto& p : planned) {
    const TensorView view = source.at(p.engine);
    TensorData t;
    t.dtype = view.dtype;
    t.shape = view.shape;
    t.bytes.assign(view.data, view.data + view.size_bytes);
    if (source.release) source.release(p.engine);
    t = heads_to_megatron(t, p.key.heads, report.num_heads, "'" + p.engine + "'");
    if (p.key.layer < 0) {
      writer.add_tensor(p.key.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
      written.insert(p.key.name);
      continue;
    }
    std::vector<int64_t> global{num_layers};
    global.insert(global.end(), t.shape.begin(), t.shape.end());
    const int parts = p.key.tp_axis >= 0 ? options.tensor_parallel : 1;
    if (parts > 1 && (size_t(p.key.tp_axis) >= t.shape.size() || t.shape[size_t(p.key.tp_axis)] % parts != 0))
      throw Error(ErrorCode::invalid_argument, subject,
                  "'" + p.engine + "' " + vec_text(t.shape) +
                      " does not split evenly over tensor parallel size " + std::to_string(parts));
    for (int r = 0; r < parts; ++r) {
      TensorData piece = t;
      std::vector<int64_t> offsets(global.size(), 0);
      offsets[0] = p.key.layer;
      if (parts > 1) {
        const int64_t length = t.shape[size_t(p.key.tp_axis)] / parts;
        piece = slice_axis(t, size_t(p.key.tp_axis), r * length, length);
        offsets[size_t(p.key.tp_axis) + 1] = r * length;
      }
      std::vector<int64_t> sizes{1};
      sizes.insert(sizes.end(), piece.shape.begin(), piece.shape.end());
      writer.add_chunk(p.key.name, piece.dtype, global, offsets, sizes, piece.bytes.data(),
                       piece.bytes.size(), options.file_per_rank ? r : 0);
    }
    written.insert(p.key.name);
  }
  if (options.extra_state) {
    // Megatron stores a ShardedObject as torch.save of the list of its local objects; the converter's
    // extra state is None.
    const std::string none_list = save_torch_object(make_list({make_none()}));
    for (const auto& key : megatron_extra_state_keys(num_layers)) {
      writer.add_object(key, none_list);
      written.insert(key);
    }
  }
  writer.finish();
  report.written.assign(written.begin(), written.end());

  MegatronRunArgs args;
  args.tensor_parallel = options.tensor_parallel;
  args.pipeline_parallel = options.pipeline_parallel;
  args.num_layers = num_layers;
  args.hidden_size = hidden;
  args.num_attention_heads = report.num_heads;
  write_megatron_config(report.checkpoint);
  write_megatron_common(report.checkpoint, args, options.iteration);
  write_megatron_tracker(root, options.iteration);

  if (!written.count("context_embedder.drop_emb"))
    report.notes.push_back(
        "no context_embedder.drop_emb (the weights hold no null_caption): a run with caption dropout expects "
        "it; "
        "load with --dist-ckpt-strictness log_all, and the run keeps its own initial value");
  report.notes.push_back(
      "the Transformer Engine _extra_state objects a run expects depend on its Transformer Engine and "
      "Megatron-Core versions; if it reports missing ones, load with --dist-ckpt-strictness log_all");
  if (options.iteration > 0)
    report.notes.push_back(
        "an iteration checkpoint: common.pt's args say no_save_optim and no_save_rng, so the "
        "run does not look for optimizer or RNG state");
  return report;
}

}  // namespace mugv
