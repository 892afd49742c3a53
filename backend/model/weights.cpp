#include "model/weights.h"

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/strings.h"
#include "core/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>

namespace mugv {

namespace {

std::string name_list(const std::vector<std::string>& names) {
  std::string s;
  const size_t shown = std::min<size_t>(names.size(), 5);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > shown) s += " (and " + std::to_string(names.size() - shown) + " more)";
  return s;
}

std::optional<torch::ScalarType> torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::f64:
      return torch::kFloat64;
    case DType::f32:
      return torch::kFloat32;
    case DType::f16:
      return torch::kFloat16;
    case DType::bf16:
      return torch::kBFloat16;
    case DType::i64:
      return torch::kInt64;
    case DType::i32:
      return torch::kInt32;
    case DType::i16:
      return torch::kInt16;
    case DType::i8:
      return torch::kInt8;
    case DType::u8:
      return torch::kUInt8;
    case DType::boolean:
      return torch::kBool;
    default:
      return std::nullopt;
  }
}

}  // namespace

const char* to_string(UnexpectedTensors policy) {
  switch (policy) {
    case UnexpectedTensors::error:
      return "error";
    case UnexpectedTensors::ignore:
      return "ignore";
    case UnexpectedTensors::unknown:
      break;
  }
  return "unknown";
}

std::optional<UnexpectedTensors> unexpected_tensors_from_string(std::string_view name) {
  if (name == "error") return UnexpectedTensors::error;
  if (name == "ignore") return UnexpectedTensors::ignore;
  if (name == "unknown") return UnexpectedTensors::unknown;
  return std::nullopt;
}

std::optional<DType> safetensors_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64:
      return DType::f64;
    case torch::kFloat32:
      return DType::f32;
    case torch::kFloat16:
      return DType::f16;
    case torch::kBFloat16:
      return DType::bf16;
    case torch::kInt64:
      return DType::i64;
    case torch::kInt32:
      return DType::i32;
    case torch::kInt16:
      return DType::i16;
    case torch::kInt8:
      return DType::i8;
    case torch::kUInt8:
      return DType::u8;
    case torch::kBool:
      return DType::boolean;
    default:
      return std::nullopt;
  }
}

std::vector<std::pair<std::string, torch::Tensor>> module_state(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

torch::Tensor tensor_from_view(const TensorView& view, const std::string& subject) {
  auto type = torch_dtype(view.dtype);
  if (!type) {
    throw Error(ErrorCode::unsupported, subject,
                std::string("dtype ") + to_string(view.dtype) + " is not supported");
  }
  auto out = torch::empty(view.shape, torch::TensorOptions().dtype(*type));
  if (view.size_bytes > 0) std::memcpy(out.data_ptr(), view.data, view.size_bytes);
  return out;
}

namespace {

// Every parameter and buffer of `module` as a contiguous CPU tensor with its file dtype, in module order.
// Throws Error(unsupported) naming `path` and the tensor for a dtype weight files cannot hold.
void for_each_saved_tensor(const torch::nn::Module& module, const std::filesystem::path& path,
                           const std::function<void(const std::string&, DType, const torch::Tensor&)>& fn) {
  for (const auto& [name, tensor] : module_state(module)) {
    auto dtype = safetensors_dtype(tensor.scalar_type());
    if (!dtype) {
      throw Error(ErrorCode::unsupported, path.string(),
                  name + ": dtype " + std::string(c10::toString(tensor.scalar_type())) + " cannot be saved");
    }
    fn(name, *dtype, tensor.detach().to(torch::kCPU).contiguous());
  }
}

}  // namespace

void save_module(const torch::nn::Module& module, const std::filesystem::path& path,
                 const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter writer;
  std::vector<torch::Tensor> keep_alive;
  for_each_saved_tensor(module, path, [&](const std::string& name, DType dtype, const torch::Tensor& cpu) {
    keep_alive.push_back(cpu);
    writer.add_borrowed(name, dtype, cpu.sizes().vec(), cpu.data_ptr(), cpu.numel() * cpu.element_size());
  });
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
}

namespace {

// Tensors larger than this are copied in slices of rows, each slice's file pages dropped once copied.
constexpr size_t kLoadSliceBytes = size_t(32) << 20;

// The tensors of a file set as load_tensors reads them: safetensors files and WeightFiles alike.
struct TensorSource {
  std::string subject;  // the path opened, for messages
  std::vector<std::string> names;
  std::function<bool(const std::string&)> contains;
  std::function<const TensorView&(const std::string&)> at;
  std::function<void(const std::string&)> release;  // drops a copied tensor's pages; may be empty
};

// Checks every module entry against the source before anything is copied, then copies tensor by tensor
// straight from the mapped bytes (converting dtype as needed), releasing each tensor's pages once it is in.
LoadReport load_tensors(torch::nn::Module& module, const TensorSource& source, const TensorNameMap& names,
                        UnexpectedTensors unexpected) {
  const std::string& subject = source.subject;
  if (unexpected == UnexpectedTensors::unknown) {
    throw Error(ErrorCode::invalid_argument, subject, "unexpected-tensor policy must be error or ignore");
  }
  struct Match {
    torch::Tensor target;
    const TensorView* view;
    std::string file_name;
  };
  std::vector<Match> matches;
  std::vector<std::string> missing;
  std::set<std::string> used;
  for (const auto& [name, tensor] : module_state(module)) {
    std::vector<std::string> candidates = names ? names(name) : std::vector<std::string>{name};
    const std::string* found = nullptr;
    for (const auto& candidate : candidates) {
      if (source.contains(candidate)) {
        found = &candidate;
        break;
      }
    }
    if (!found) {
      missing.push_back(candidates.empty() ? name : candidates.front());
      continue;
    }
    const TensorView& view = source.at(*found);
    if (view.shape != tensor.sizes().vec()) {
      throw Error(ErrorCode::invalid_argument, subject,
                  *found + " has shape " + shape_string(view.shape) + "; the model expects " +
                      shape_string(tensor.sizes().vec()));
    }
    if (!torch_dtype(view.dtype)) {
      throw Error(ErrorCode::unsupported, subject,
                  *found + ": dtype " + std::string(to_string(view.dtype)) + " is not supported");
    }
    used.insert(*found);
    matches.push_back({tensor, &view, *found});
  }
  if (!missing.empty()) {
    throw Error(
        ErrorCode::not_found, subject,
        std::to_string(missing.size()) + " tensors the model needs are missing: " + name_list(missing));
  }
  LoadReport report;
  for (const auto& name : source.names) {
    if (!used.count(name)) report.ignored.push_back(name);
  }
  if (!report.ignored.empty() && unexpected == UnexpectedTensors::error) {
    throw Error(ErrorCode::format, subject,
                std::to_string(report.ignored.size()) +
                    " tensors do not belong to this model: " + name_list(report.ignored));
  }
  torch::NoGradGuard no_grad;
  for (auto& match : matches) {
    const TensorView& view = *match.view;
    if (view.size_bytes > 0) {
      // Read in place: the mapping is read-only and copy_ only reads its source.
      auto mapped = torch::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                                     torch::TensorOptions().dtype(*torch_dtype(view.dtype)));
      if (!source.release || view.shape.empty() || view.size_bytes <= kLoadSliceBytes) {
        match.target.copy_(mapped);
      } else {
        // A big tensor (the adaLN linear of a 10B DiT is 143 MB) goes in slices of rows whose pages are
        // dropped as soon as they are copied, so no more than a slice is resident twice.
        const int64_t rows = view.shape[0];
        const int64_t row_bytes = static_cast<int64_t>(view.size_bytes) / std::max<int64_t>(rows, 1);
        const int64_t step =
            std::max<int64_t>(1, static_cast<int64_t>(kLoadSliceBytes) / std::max<int64_t>(row_bytes, 1));
        for (int64_t row = 0; row < rows; row += step) {
          const int64_t count = std::min(step, rows - row);
          match.target.narrow(0, row, count).copy_(mapped.narrow(0, row, count));
          release_mapped_pages(view.data + row * row_bytes, static_cast<size_t>(count * row_bytes));
        }
      }
    }
    if (source.release) source.release(match.file_name);
    ++report.loaded;
  }
  return report;
}

}  // namespace

void save_module_torch(const torch::nn::Module& module, const std::filesystem::path& path,
                       const std::string& prefix) {
  TorchCheckpointWriter writer(path);
  for_each_saved_tensor(module, path, [&](const std::string& name, DType dtype, const torch::Tensor& cpu) {
    writer.add(prefix + name, dtype, cpu.sizes().vec(), cpu.data_ptr(), cpu.numel() * cpu.element_size());
  });
  writer.finish();
}

LoadReport load_module(torch::nn::Module& module, const SafetensorsFile& file, const TensorNameMap& names,
                       UnexpectedTensors unexpected) {
  TensorSource source{file.path().string(),
                      file.names(),
                      [&file](const std::string& name) { return file.contains(name); },
                      [&file](const std::string& name) -> const TensorView& { return file.at(name); },
                      {}};
  return load_tensors(module, source, names, unexpected);
}

LoadReport load_module(torch::nn::Module& module, const WeightFiles& files, const TensorNameMap& names,
                       UnexpectedTensors unexpected) {
  TensorSource source{files.path().string(), files.names(),
                      [&files](const std::string& name) { return files.contains(name); },
                      [&files](const std::string& name) -> const TensorView& { return files.at(name); },
                      [&files](const std::string& name) { files.release(name); }};
  return load_tensors(module, source, names, unexpected);
}

LoadReport load_module(torch::nn::Module& module, const std::filesystem::path& path,
                       UnexpectedTensors unexpected) {
  const WeightFiles files = WeightFiles::open(path);
  return load_module(module, files, {}, unexpected);
}

void save_named_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::filesystem::path& path,
                        const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter writer;
  std::vector<torch::Tensor> keep;
  for (const auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    auto dtype = safetensors_dtype(t.scalar_type());
    if (!dtype)
      throw Error(ErrorCode::unsupported, path.string(), cat(name, ": dtype safetensors cannot hold"));
    keep.push_back(t);
    writer.add_borrowed(name, *dtype, t.sizes().vec(), t.data_ptr(), t.nbytes());
  }
  for (const auto& [k, v] : metadata) writer.set_metadata(k, v);
  writer.write(path);
}

}  // namespace mugv
