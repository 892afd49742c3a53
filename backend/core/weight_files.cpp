#include "core/weight_files.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/mapped_file.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/torch_checkpoint.h"
#include "core/zip_archive.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <utility>

namespace mugv {
namespace fs = std::filesystem;

namespace {

constexpr std::array<std::pair<WeightFormat, const char*>, 5> kFormats{{
    {WeightFormat::unknown, "unknown"},
    {WeightFormat::safetensors, "safetensors"},
    {WeightFormat::safetensors_sharded, "safetensors_sharded"},
    {WeightFormat::torch_zip, "torch_zip"},
    {WeightFormat::torch_zip_sharded, "torch_zip_sharded"},
}};

constexpr std::array<const char*, 4> kTorchExtensions{{".bin", ".pt", ".pth", ".ckpt"}};

std::string list_text(const std::vector<std::string>& items, size_t shown = 8) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < shown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > shown) out += cat(" and ", items.size() - shown, " more");
  return out;
}

// A shard name from an index must stay beside the index: it is read, so it must not reach
// elsewhere on disk.
bool plain_relative(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  for (const fs::path& part : p)
    if (part == ".." || part == ".") return false;
  return true;
}

}  // namespace

const char* to_string(WeightFormat format) {
  for (const auto& [f, name] : kFormats)
    if (f == format) return name;
  return "unknown";
}

std::optional<WeightFormat> weight_format_from_string(std::string_view name) {
  for (const auto& [f, n] : kFormats)
    if (name == n) return f;
  return std::nullopt;
}

WeightFormat detect_weight_file(const fs::path& path) {
  const std::string subject = path.string();
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(ErrorCode::io, subject, "is a directory, expected a weight file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path, ec)) throw Error(ErrorCode::not_found, subject, "no such file");
    throw Error(ErrorCode::io, subject, "cannot open for reading (permissions?)");
  }
  uint8_t head[16] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<uint64_t>(in.gcount());
  if (looks_like_zip(head, got)) return WeightFormat::torch_zip;
  if (looks_like_legacy_torch(head, got)) throw Error(ErrorCode::unsupported, subject, kLegacyTorchMessage);
  // safetensors: an 8-byte little-endian header length, then the JSON header.
  if (got >= 9 && head[8] == '{') return WeightFormat::safetensors;
  throw Error(ErrorCode::format, subject, "neither a safetensors file nor a torch.save zip checkpoint");
}

// One opened file. Exactly one of the two readers is engaged.
struct WeightFiles::Shard {
  std::optional<SafetensorsFile> safetensors;
  std::optional<TorchCheckpoint> torch;

  const TensorView* find(const std::string& name) const {
    if (safetensors) return safetensors->contains(name) ? &safetensors->at(name) : nullptr;
    return torch->contains(name) ? &torch->at(name) : nullptr;
  }
  std::vector<std::string> names() const { return safetensors ? safetensors->names() : torch->names(); }
};

WeightFiles::WeightFiles(WeightFiles&& other) noexcept = default;
WeightFiles& WeightFiles::operator=(WeightFiles&& other) noexcept = default;
WeightFiles::~WeightFiles() = default;

void WeightFiles::add_shard(const fs::path& file) {
  auto shard = std::make_unique<Shard>();
  if (detect_weight_file(file) == WeightFormat::safetensors)
    shard->safetensors.emplace(SafetensorsFile::open(file));
  else
    shard->torch.emplace(TorchCheckpoint::open(file));
  files_.push_back(file);
  shards_.push_back(std::move(shard));
}

WeightFiles WeightFiles::open(const fs::path& path) {
  const std::string subject = path.string();
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) throw Error(ErrorCode::not_found, subject, "no such file or directory");

  fs::path chosen = path;
  if (fs::is_directory(status)) {
    std::vector<std::string> all, indexes, safetensors, torch;
    for (const fs::directory_entry& item : fs::directory_iterator(path, ec)) {
      const std::string name = item.path().filename().string();
      if (name.empty() || name[0] == '.' || !fs::is_regular_file(item.path(), ec)) continue;
      all.push_back(name);
      if (ends_with(name, ".index.json")) indexes.push_back(name);
      if (ends_with(name, ".safetensors")) safetensors.push_back(name);
      for (const char* ext : kTorchExtensions)
        if (item.path().extension() == ext) torch.push_back(name);
    }
    if (ec) throw Error(ErrorCode::io, subject, "cannot list the directory: " + ec.message());
    for (auto* names : {&all, &indexes, &safetensors, &torch}) std::sort(names->begin(), names->end());
    if (indexes.size() > 1) {
      std::vector<std::string> preferred;
      for (const std::string& name : indexes)
        if (ends_with(name, ".safetensors.index.json")) preferred.push_back(name);
      if (preferred.size() != 1)
        throw Error(ErrorCode::invalid_argument, subject,
                    "several shard indexes (" + list_text(indexes) + "); open one of them");
      indexes = preferred;
    }
    const std::vector<std::string>* pick = !indexes.empty()       ? &indexes
                                           : !safetensors.empty() ? &safetensors
                                                                  : &torch;
    if (pick->empty())
      throw Error(ErrorCode::not_found, subject,
                  "no weights here: no *.index.json, .safetensors, .bin, .pt, .pth or .ckpt file (" +
                      (all.empty() ? std::string("the directory is empty") : "found " + list_text(all)) +
                      ")");
    if (pick->size() > 1)
      throw Error(ErrorCode::invalid_argument, subject,
                  "several weight files and no *.index.json to say how they fit together (" +
                      list_text(*pick) + "); open one of them");
    chosen = path / pick->front();
  }

  WeightFiles weights;
  weights.path_ = path;
  if (!ends_with(chosen.filename().string(), ".json")) {
    weights.add_shard(chosen);
    const Shard& shard = *weights.shards_.front();
    for (const std::string& name : shard.names()) weights.tensors_.emplace(name, Entry{shard.find(name), 0});
    if (shard.safetensors) {
      weights.format_ = WeightFormat::safetensors;
      weights.metadata_ = shard.safetensors->metadata();
    } else {
      weights.format_ = WeightFormat::torch_zip;
    }
    return weights;
  }

  // A shard index.
  const std::string index_subject = chosen.string();
  const nlohmann::json index = parse_json_text(read_text_file(chosen), index_subject);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw Error(ErrorCode::format, index_subject,
                "a shard index needs a \"weight_map\" object of tensor -> shard file");
  const nlohmann::json& map = index["weight_map"];
  if (map.empty()) throw Error(ErrorCode::format, index_subject, "weight_map is empty");
  if (index.contains("metadata") && index["metadata"].is_object())
    for (const auto& [key, value] : index["metadata"].items())
      weights.metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();

  // Shards in order of first use, with the tensors the map puts in each.
  std::vector<std::string> shard_names;
  std::map<std::string, std::vector<std::string>> tensors_of;
  for (const auto& [tensor, shard] : map.items()) {
    if (!shard.is_string())
      throw Error(ErrorCode::format, index_subject,
                  "weight_map value of '" + tensor + "' is not a file name");
    std::vector<std::string>& list = tensors_of[shard.get<std::string>()];
    if (list.empty()) shard_names.push_back(shard.get<std::string>());
    list.push_back(tensor);
  }
  const fs::path dir = chosen.parent_path();
  for (const std::string& shard_name : shard_names) {
    const std::vector<std::string>& tensors = tensors_of[shard_name];
    if (!plain_relative(shard_name))
      throw Error(ErrorCode::format, index_subject,
                  "weight_map names shard '" + shard_name + "', which is not a file beside the index");
    const fs::path file = dir / shard_name;
    if (!fs::exists(file, ec))
      throw Error(ErrorCode::not_found, index_subject,
                  cat("shard '", shard_name, "' (holding ", tensors.size(), " tensors such as '",
                      tensors.front(), "') does not exist at ", file.string()));
    weights.add_shard(file);
    const size_t at = weights.shards_.size() - 1;
    const Shard& shard = *weights.shards_.back();
    for (const std::string& tensor : tensors) {
      const TensorView* view = shard.find(tensor);
      if (!view)
        throw Error(
            ErrorCode::corrupt, index_subject,
            "weight_map puts tensor '" + tensor + "' in shard '" + shard_name + "', which does not hold it");
      weights.tensors_.emplace(tensor, Entry{view, at});
    }
    if (shard.safetensors)
      for (const auto& [key, value] : shard.safetensors->metadata()) weights.metadata_.emplace(key, value);
  }
  const bool all_safetensors = std::all_of(weights.shards_.begin(), weights.shards_.end(),
                                           [](const auto& s) { return s->safetensors.has_value(); });
  const bool all_torch = std::all_of(weights.shards_.begin(), weights.shards_.end(),
                                     [](const auto& s) { return s->torch.has_value(); });
  if (!all_safetensors && !all_torch)
    throw Error(ErrorCode::unsupported, index_subject, "shards mix safetensors and torch.save files");
  weights.format_ = all_safetensors ? WeightFormat::safetensors_sharded : WeightFormat::torch_zip_sharded;
  return weights;
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) out.push_back(name);
  return out;
}

const WeightFiles::Entry& WeightFiles::entry(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::vector<std::string> files;
    for (const fs::path& file : files_) files.push_back(file.filename().string());
    throw Error(ErrorCode::not_found, path_.string(),
                "no tensor named '" + name + "' in " +
                    (files.empty() ? std::string("(no files)") : list_text(files)));
  }
  return it->second;
}

const TensorView& WeightFiles::at(const std::string& name) const {
  return *entry(name).view;
}

const fs::path& WeightFiles::file_of(const std::string& name) const {
  return files_[entry(name).file];
}

uint64_t WeightFiles::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, entry] : tensors_) total += entry.view->size_bytes;
  return total;
}

void WeightFiles::release(const std::string& name) const {
  const TensorView& view = at(name);
  release_mapped_pages(view.data, view.size_bytes);
}

}  // namespace mugv
