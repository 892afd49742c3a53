#include "train/sharded_checkpoint.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/dit_parallel.h"
#include "model/weights.h"
#include "train/zero_optimizer.h"

namespace mugv {
namespace {

constexpr const char* kLayoutFile = "layout.json";

std::map<std::string, torch::Tensor> read_file(const fs::path& path,
                                               std::map<std::string, std::string>* metadata) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(ErrorCode::corrupt, path.string(), "file is missing");
  auto file = SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : file.names()) out[name] = tensor_from_view(file.at(name), path.string());
  if (metadata && metadata->empty()) *metadata = file.metadata();
  return out;
}

TensorParallelRole role_of(const std::string& name) {
  return tensor_parallel_role(state_parameter_name(name));
}

}  // namespace

void write_checkpoint_layout(const fs::path& dir, const CheckpointLayout& l) {
  write_json_atomic(dir / kLayoutFile,
                    {{"tp", l.tp}, {"cp", l.cp}, {"dp", l.dp}, {"pp", l.pp}, {"zero", l.zero}});
}

CheckpointLayout read_checkpoint_layout(const fs::path& dir) {
  CheckpointLayout l;
  std::error_code ec;
  if (!fs::exists(dir / kLayoutFile, ec)) return l;
  auto j = read_json_file(dir / kLayoutFile);
  try {
    l.tp = j.at("tp").get<int>();
    l.cp = j.at("cp").get<int>();
    l.dp = j.at("dp").get<int>();
    l.pp = j.value("pp", 1);  // written before pipeline stages existed: one stage
    l.zero = j.at("zero").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::corrupt, (dir / kLayoutFile).string(), e.what());
  }
  if (l.tp < 1 || l.cp < 1 || l.dp < 1 || l.pp < 1)
    throw Error(ErrorCode::corrupt, (dir / kLayoutFile).string(), "parallel sizes must be at least 1");
  return l;
}

std::string describe(const CheckpointLayout& l) {
  return cat("tp", l.tp, ".cp", l.cp, ".dp", l.dp, l.pp > 1 ? cat(".pp", l.pp) : std::string(),
             l.zero ? " zero1" : "");
}

std::string checkpoint_file_name(const std::string& stem, int tp_rank, int tp, int dp_rank, int dp,
                                 int pp_rank, int pp) {
  std::string name = stem;
  if (pp > 1) name += cat(".pp", pp_rank, "of", pp);
  if (tp > 1) name += cat(".tp", tp_rank, "of", tp);
  if (dp > 1) name += cat(".dp", dp_rank, "of", dp);
  return name + ".safetensors";
}

std::string state_parameter_name(const std::string& name) {
  for (const char* prefix : {"exp_avg_sq.", "exp_avg.", "momentum."})
    if (starts_with(name, prefix)) return name.substr(std::string(prefix).size());
  return name;
}

std::vector<int64_t> full_shape_of(const std::string& name, std::vector<int64_t> shape, int tp) {
  auto role = role_of(name);
  if (role.split == TensorSplit::column && !shape.empty()) shape[0] *= tp;
  if (role.split == TensorSplit::row && shape.size() > 1) shape[1] *= tp;
  return shape;
}

namespace {

// The whole tensors of pipeline stage `stage`'s files (the only stage when saved.pp == 1) into `out`.
void read_stage_tensors(const fs::path& dir, const std::string& stem, const CheckpointLayout& saved,
                        const std::map<std::string, std::vector<int64_t>>& full_shapes, int stage,
                        CanonicalTensors& out) {
  auto file_name = [&](int t, int d = 0, int dp = 1) {
    return checkpoint_file_name(stem, t, saved.tp, d, dp, stage, saved.pp);
  };
  // Per tensor-parallel rank: that rank's pieces, whole per tensor.
  std::vector<std::map<std::string, torch::Tensor>> per_rank(static_cast<size_t>(saved.tp));
  const bool zero_pieces = stem == "optimizer" && saved.zero && saved.dp > 1;
  for (int t = 0; t < saved.tp; ++t) {
    auto& mine = per_rank[static_cast<size_t>(t)];
    if (!zero_pieces) {
      mine = read_file(dir / file_name(t), &out.metadata);
      continue;
    }
    std::map<std::string, torch::Tensor> flat;  // whole flattened piece of rank t per state name
    for (int d = 0; d < saved.dp; ++d) {
      const fs::path path = dir / file_name(t, d, saved.dp);
      for (auto& [name, piece] : read_file(path, &out.metadata)) {
        auto parsed = parse_state_piece(name);
        if (!parsed) throw Error(ErrorCode::corrupt, path.string(), cat(name, " is not a ZeRO state piece"));
        const auto& [state_name, offset] = *parsed;
        auto shape = full_shapes.find(state_parameter_name(state_name));
        if (shape == full_shapes.end())
          throw Error(ErrorCode::corrupt, path.string(),
                      cat(state_name, " belongs to no parameter of this model"));
        auto& target = flat[state_name];
        if (!target.defined()) {
          int64_t numel = 1;
          for (int64_t s : shape->second) numel *= s;
          // Rank t's piece: a split tensor's 1/tp, a replicated one whole.
          const bool split = role_of(state_name).split != TensorSplit::replicated;
          target = torch::zeros({split ? numel / saved.tp : numel}, torch::kFloat32);
        }
        if (offset < 0 || offset + piece.numel() > target.numel())
          throw Error(ErrorCode::corrupt, path.string(), cat(name, " lies outside its parameter"));
        target.narrow(0, offset, piece.numel()).copy_(piece.reshape(-1));
      }
    }
    for (auto& [name, f] : flat) {
      auto shape = full_shapes.at(state_parameter_name(name));
      auto role = role_of(name);
      if (role.split == TensorSplit::column) shape[0] /= saved.tp;
      if (role.split == TensorSplit::row) shape[1] /= saved.tp;
      mine[name] = f.view(shape);
    }
  }
  for (const auto& [name, first] : per_rank[0]) {
    std::vector<torch::Tensor> pieces;
    for (int t = 0; t < saved.tp; ++t) {
      auto it = per_rank[static_cast<size_t>(t)].find(name);
      if (it == per_rank[static_cast<size_t>(t)].end())
        throw Error(ErrorCode::corrupt, (dir / file_name(t)).string(), cat("tensor ", name, " is missing"));
      pieces.push_back(it->second);
    }
    if (out.tensors.count(name))
      throw Error(ErrorCode::corrupt, (dir / file_name(0)).string(),
                  cat("tensor ", name, " is also held by an earlier pipeline stage"));
    out.tensors[name] = unshard_tensor(pieces, role_of(name));
  }
}

}  // namespace

CanonicalTensors read_canonical_tensors(const fs::path& dir, const std::string& stem,
                                        const CheckpointLayout& saved,
                                        const std::map<std::string, std::vector<int64_t>>& full_shapes) {
  CanonicalTensors out;
  for (int stage = 0; stage < saved.pp; ++stage)
    read_stage_tensors(dir, stem, saved, full_shapes, stage, out);
  return out;
}

}  // namespace mugv
