#include "core/safetensors.h"

#include "core/mapped_file.h"
#include "core/paths.h"
#include "core/strings.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

namespace mugv {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size_bytes;
};

constexpr std::array<DTypeInfo, 12> kDTypes{{
    {DType::f64, "F64", 8},
    {DType::f32, "F32", 4},
    {DType::f16, "F16", 2},
    {DType::bf16, "BF16", 2},
    {DType::i64, "I64", 8},
    {DType::i32, "I32", 4},
    {DType::i16, "I16", 2},
    {DType::i8, "I8", 1},
    {DType::u8, "U8", 1},
    {DType::boolean, "BOOL", 1},
    {DType::f8_e4m3, "F8_E4M3", 1},
    {DType::f8_e5m2, "F8_E5M2", 1},
}};

// numel * dtype size, or nullopt on overflow.
std::optional<uint64_t> byte_count(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t total = dtype_size_bytes(dtype);
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(total, static_cast<uint64_t>(dim), &total)) return std::nullopt;
  }
  return total;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
  return out + "]";
}

// A JSON value as a non-negative integer that fits in int64, or nullopt.
std::optional<uint64_t> as_count(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    uint64_t v = value.get<uint64_t>();
    if (v <= uint64_t(INT64_MAX)) return v;
  } else if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

bool encodable(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

}  // namespace

const char* to_string(DType dtype) {
  for (const DTypeInfo& info : kDTypes)
    if (info.dtype == dtype) return info.name;
  return "unknown";
}

std::optional<DType> dtype_from_string(std::string_view name) {
  for (const DTypeInfo& info : kDTypes)
    if (name == info.name) return info.dtype;
  return std::nullopt;
}

size_t dtype_size_bytes(DType dtype) {
  for (const DTypeInfo& info : kDTypes)
    if (info.dtype == dtype) return info.size_bytes;
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

// ---- reader ----

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

const TensorView& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw Error(ErrorCode::not_found, path_.string(), "no tensor named '" + name + "'");
  return it->second;
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorView& view = at(name);
  release_mapped_pages(view.data, view.size_bytes);
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string subject = path.string();
  auto format_error = [&](const std::string& message) { return Error(ErrorCode::format, subject, message); };
  auto corrupt_error = [&](const std::string& message) {
    return Error(ErrorCode::corrupt, subject, message);
  };

  MappedFile mapping = MappedFile::open(path);
  const uint64_t file_bytes = mapping.size_bytes();
  if (file_bytes < 8)
    throw format_error(cat("file is ", file_bytes, " bytes, too short for the 8-byte header length"));
  SafetensorsFile file(std::move(mapping));
  file.path_ = path;
  const uint8_t* base = file.mapping_.data();

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | base[i];
  if (header_bytes == 0) throw format_error("header length is 0");
  if (header_bytes > kSafetensorsMaxHeaderBytes)
    throw format_error(cat("header length ", header_bytes, " exceeds the ", kSafetensorsMaxHeaderBytes >> 20,
                           " MiB limit (not a safetensors file?)"));
  if (header_bytes > file_bytes - 8)
    throw corrupt_error(cat("header length ", header_bytes, " is larger than the ", file_bytes - 8,
                            " bytes after it (truncated file?)"));
  file.header_bytes_ = header_bytes;
  const char* header = reinterpret_cast<const char*>(base + 8);
  if (header[0] != '{') throw format_error("header does not start with '{'");

  // A repeated top-level key would silently replace a tensor; the parser callback sees keys in order.
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(
        header, header + header_bytes,
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (depth == 1 && event == nlohmann::json::parse_event_t::key && duplicate.empty() &&
              parsed.is_string() && !seen.insert(parsed.get<std::string>()).second)
            duplicate = parsed.get<std::string>();
          return true;
        });
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    throw format_error(
        cat("header is not valid JSON (byte ", e.byte, "): ", what.substr(what.find(": ") + 2)));
  } catch (const nlohmann::json::exception& e) {
    // Valid JSON that nlohmann cannot hold, such as a number beyond a double's range (out_of_range 406).
    std::string what = e.what();
    throw format_error("header is not valid JSON: " + what.substr(what.find("] ") + 2));
  }
  if (!duplicate.empty()) throw format_error("'" + duplicate + "' appears twice in the header");
  if (!document.is_object()) throw format_error("header is not a JSON object");

  const uint64_t buffer_bytes = file_bytes - 8 - header_bytes;
  const uint8_t* buffer = base + 8 + header_bytes;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : document.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object()) throw format_error("__metadata__ is not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw format_error("__metadata__ value of '" + key + "' is not a string");
        file.metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!entry.is_object()) throw format_error(where + "expected an object with dtype, shape, data_offsets");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || shape_it == entry.end() || offsets_it == entry.end())
      throw format_error(where + "missing dtype, shape or data_offsets");
    if (!dtype_it->is_string()) throw format_error(where + "dtype is not a string");
    std::optional<DType> dtype = dtype_from_string(dtype_it->get<std::string>());
    if (!dtype) throw format_error(where + "unknown dtype '" + dtype_it->get<std::string>() + "'");
    if (!shape_it->is_array()) throw format_error(where + "shape is not a list of non-negative integers");
    std::vector<int64_t> shape;
    for (const auto& dim : *shape_it) {
      std::optional<uint64_t> d = as_count(dim);
      if (!d) throw format_error(where + "shape is not a list of non-negative integers: " + shape_it->dump());
      shape.push_back(static_cast<int64_t>(*d));
    }
    if (!offsets_it->is_array() || offsets_it->size() != 2 || !as_count((*offsets_it)[0]) ||
        !as_count((*offsets_it)[1]))
      throw format_error(where + "data_offsets is not two non-negative integers: " + offsets_it->dump());
    uint64_t begin = *as_count((*offsets_it)[0]);
    uint64_t end = *as_count((*offsets_it)[1]);
    if (begin > end) throw format_error(cat(where, "data_offsets begin ", begin, " is after end ", end));
    if (end > buffer_bytes)
      throw corrupt_error(cat(where, "data_offsets end ", end, " is beyond the ", buffer_bytes,
                              "-byte data buffer (truncated file?)"));
    std::optional<uint64_t> expected = byte_count(shape, *dtype);
    if (!expected) throw format_error(where + "shape " + shape_text(shape) + " overflows 64-bit byte counts");
    if (*expected != end - begin)
      throw format_error(cat(where, "shape ", shape_text(shape), " of ", to_string(*dtype), " needs ",
                             *expected, " bytes, data_offsets span ", end - begin));
    TensorView view;
    view.dtype = *dtype;
    view.shape = std::move(shape);
    view.size_bytes = static_cast<size_t>(end - begin);
    view.data = view.size_bytes ? buffer + begin : nullptr;
    auto inserted = file.tensors_.emplace(name, std::move(view));
    spans.push_back(Span{begin, end, &inserted.first->first});
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const Span& span : spans) {
    if (span.begin < covered)
      throw format_error(
          cat("tensors '", *previous, "' and '", *span.name, "' overlap at byte ", span.begin));
    if (span.begin > covered)
      throw format_error(cat("bytes ", covered, "..", span.begin,
                             " of the data buffer belong to no tensor (before '", *span.name, "')"));
    covered = span.end;
    previous = span.name;
  }
  if (covered != buffer_bytes)
    throw corrupt_error(cat(buffer_bytes - covered, " bytes after the last tensor belong to no tensor"));
  return file;
}

// ---- writer ----

SafetensorsWriter::Pending& SafetensorsWriter::add_entry(const std::string& name, DType dtype,
                                                         const std::vector<int64_t>& shape, size_t bytes) {
  const std::string subject = name.empty() ? std::string("safetensors") : name;
  if (name.empty()) throw Error(ErrorCode::invalid_argument, subject, "tensor name is empty");
  if (name == "__metadata__") throw Error(ErrorCode::invalid_argument, subject, "reserved tensor name");
  if (!encodable(name)) throw Error(ErrorCode::invalid_argument, subject, "tensor name is not valid UTF-8");
  if (tensors_.count(name)) throw Error(ErrorCode::invalid_argument, subject, "tensor added twice");
  if (dtype_size_bytes(dtype) == 0) throw Error(ErrorCode::invalid_argument, subject, "unknown dtype");
  std::optional<uint64_t> expected = byte_count(shape, dtype);
  if (!expected)
    throw Error(ErrorCode::invalid_argument, subject,
                "shape " + shape_text(shape) + " has a negative or huge dimension");
  if (*expected != bytes)
    throw Error(ErrorCode::invalid_argument, subject,
                cat("shape ", shape_text(shape), " of ", to_string(dtype), " needs ", *expected,
                    " bytes, got ", bytes));
  Pending& pending = tensors_[name];
  pending.dtype = dtype;
  pending.shape = shape;
  pending.bytes = bytes;
  return pending;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t bytes) {
  Pending& pending = add_entry(name, dtype, shape, bytes);
  const auto* p = static_cast<const uint8_t*>(data);
  if (bytes) pending.owned.assign(p, p + bytes);
  pending.data = pending.owned.data();
}

void SafetensorsWriter::add_borrowed(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                     const void* data, size_t bytes) {
  add_entry(name, dtype, shape, bytes).data = static_cast<const uint8_t*>(data);
}

void SafetensorsWriter::add_generated(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                      size_t bytes, std::function<void(uint8_t* out)> fill) {
  if (!fill) throw Error(ErrorCode::invalid_argument, name, "add_generated without a fill function");
  add_entry(name, dtype, shape, bytes).fill = std::move(fill);
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (!encodable(key) || !encodable(value))
    throw Error(ErrorCode::invalid_argument, "__metadata__",
                "key or value of '" + key + "' is not valid UTF-8");
  metadata_[key] = value;
}

std::string SafetensorsWriter::header() const {
  std::string out = "{";
  bool first = true;
  if (!metadata_.empty()) {
    out += "\"__metadata__\":" + nlohmann::json(metadata_).dump();
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    out += first ? "" : ",";
    first = false;
    nlohmann::json shape = t.shape;
    out += nlohmann::json(name).dump() + ":{\"dtype\":\"" + to_string(t.dtype) +
           "\",\"shape\":" + shape.dump() + ",\"data_offsets\":[" + std::to_string(offset) + "," +
           std::to_string(offset + t.bytes) + "]}";
    offset += t.bytes;
  }
  out += "}";
  out.append((8 - out.size() % 8) % 8, ' ');
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  std::string head = header();
  if (head.size() > kSafetensorsMaxHeaderBytes)
    throw Error(ErrorCode::invalid_argument, path.string(), "header exceeds 100 MiB (too many tensors)");
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t(head.size()) >> (8 * i));
  AtomicFileWriter out(path);
  out.write(length, sizeof length);
  out.write(head.data(), head.size());
  std::vector<uint8_t> scratch;
  for (const auto& [name, t] : tensors_) {
    if (!t.bytes) continue;
    if (t.fill) {
      scratch.resize(t.bytes);
      t.fill(scratch.data());
      out.write(scratch.data(), t.bytes);
    } else {
      out.write(t.data, t.bytes);
    }
  }
  out.commit();
}

}  // namespace mugv
