#include "core/torch_checkpoint.h"

#include "core/error.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>

namespace mugv {
namespace {

std::string shape_text(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out + "]";
}

// Element count, or nullopt for a negative dimension or overflow.
std::optional<uint64_t> element_count(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t dim : shape)
    if (dim < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return std::nullopt;
  return n;
}

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> stride(shape.size());
  int64_t step = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    stride[i] = step;
    step *= std::max<int64_t>(shape[i], 1);
  }
  return stride;
}

// As torch's is_contiguous: the stride of a dimension of size 1 does not matter, nor do any for
// an empty tensor.
bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;
    if (shape[i] != 1 && stride[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

}  // namespace

const char* const kLegacyTorchMessage =
    "a legacy (pre-1.6, non-zip) torch.save checkpoint; re-save it with PyTorch >= 1.6 "
    "(torch.save(torch.load(f), f)) or convert it to safetensors";

// Legacy files are a bare pickle stream: PROTO 2, then torch's magic number.
bool looks_like_legacy_torch(const uint8_t* bytes, uint64_t size_bytes) {
  return bytes && size_bytes >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5;
}

TorchCheckpoint TorchCheckpoint::open(const std::filesystem::path& path) {
  TorchCheckpoint checkpoint(MappedFile::open(path));
  const std::string subject = path.string();
  const uint8_t* base = checkpoint.file_.data();
  const uint64_t file_bytes = checkpoint.file_.size_bytes();
  if (!looks_like_zip(base, file_bytes)) {
    if (looks_like_legacy_torch(base, file_bytes))
      throw Error(ErrorCode::unsupported, subject, kLegacyTorchMessage);
    throw Error(ErrorCode::format, subject, "not a torch.save zip checkpoint (no zip signature)");
  }
  const ZipArchive zip = ZipArchive::parse(base, file_bytes, subject);

  const ZipEntry* pickle = nullptr;
  for (const ZipEntry& entry : zip.entries()) {
    const size_t slash = entry.name.find('/');
    if (slash == std::string::npos || slash == 0 ||
        entry.name.compare(slash, std::string::npos, "/data.pkl") != 0)
      continue;
    if (pickle)
      throw Error(ErrorCode::format, subject,
                  "two checkpoints in one zip ('" + pickle->name + "' and '" + entry.name + "')");
    pickle = &entry;
  }
  if (!pickle)
    throw Error(ErrorCode::format, subject, "zip without <archive>/data.pkl: not a torch.save checkpoint");
  checkpoint.archive_ = pickle->name.substr(0, pickle->name.find('/'));
  const std::string prefix = checkpoint.archive_ + "/";

  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    std::string text(reinterpret_cast<const char*>(zip.data(*order)), order->size_bytes);
    if (text != "little")
      throw Error(ErrorCode::unsupported, subject,
                  "byteorder is '" + text + "'; only little-endian data is read");
  }
  zip.verify_crc(*pickle);
  std::vector<TorchTensorRecord> records = parse_torch_pickle(zip.data(*pickle), pickle->size_bytes, subject);

  std::map<std::string, DType> storage_dtypes;
  for (TorchTensorRecord& r : records) {
    const std::string where = "tensor '" + r.name + "': ";
    const size_t element_bytes = dtype_size_bytes(r.dtype);
    const std::string entry_name = prefix + "data/" + r.storage_key;
    auto [seen, first_use] = storage_dtypes.emplace(r.storage_key, r.dtype);
    if (!first_use && seen->second != r.dtype)
      throw Error(ErrorCode::format, subject,
                  cat(where, "storage data/", r.storage_key, " is viewed as both ", to_string(seen->second),
                      " and ", to_string(r.dtype)));
    const ZipEntry* entry = zip.find(entry_name);
    if (!entry)
      throw Error(ErrorCode::corrupt, subject,
                  cat(where, "its storage '", entry_name, "' is missing from the zip"));
    uint64_t storage_bytes = 0;
    if (__builtin_mul_overflow(r.storage_numel, uint64_t(element_bytes), &storage_bytes) ||
        storage_bytes > entry->size_bytes)
      throw Error(ErrorCode::corrupt, subject,
                  cat(where, "storage '", entry_name, "' holds ", entry->size_bytes, " bytes but declares ",
                      r.storage_numel, " elements of ", to_string(r.dtype), " (truncated or damaged file?)"));
    std::optional<uint64_t> numel = element_count(r.shape);
    if (!numel)
      throw Error(ErrorCode::format, subject, where + "shape " + shape_text(r.shape) + " is invalid");
    if (!is_contiguous(r.shape, r.stride))
      throw Error(ErrorCode::unsupported, subject,
                  cat(where, "not contiguous (shape ", shape_text(r.shape), ", stride ", shape_text(r.stride),
                      "); re-save it with .contiguous()"));
    if (r.storage_offset < 0 || static_cast<uint64_t>(r.storage_offset) > r.storage_numel ||
        *numel > r.storage_numel - static_cast<uint64_t>(r.storage_offset))
      throw Error(ErrorCode::corrupt, subject,
                  cat(where, "needs elements ", r.storage_offset, "..", r.storage_offset, "+", *numel,
                      " of storage '", entry_name, "', which holds ", r.storage_numel));
    TensorView view;
    view.dtype = r.dtype;
    view.shape = std::move(r.shape);
    view.size_bytes = static_cast<size_t>(*numel * element_bytes);
    view.data = view.size_bytes ? zip.data(*entry) + static_cast<uint64_t>(r.storage_offset) * element_bytes
                                : nullptr;
    if (!checkpoint.tensors_.emplace(r.name, std::move(view)).second)
      throw Error(ErrorCode::format, subject, where + "appears twice in data.pkl");
  }
  return checkpoint;
}

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

const TensorView& TorchCheckpoint::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw Error(ErrorCode::not_found, path().string(), "no tensor named '" + name + "'");
  return it->second;
}

void TorchCheckpoint::release(const std::string& name) const {
  const TensorView& view = at(name);
  release_mapped_pages(view.data, view.size_bytes);
}

// ---- writer ----

namespace {

std::string archive_name_for(const std::filesystem::path& path, const std::string& requested) {
  std::string name = requested.empty() ? path.stem().string() : requested;
  bool plain = !name.empty() && name != "." && name != "..";
  for (char c : name)
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  if (!requested.empty() && !plain)
    throw Error(ErrorCode::invalid_argument, path.string(),
                "archive name '" + requested + "' is not [A-Za-z0-9_.-]+");
  return plain ? name : "archive";
}

}  // namespace

TorchCheckpointWriter::TorchCheckpointWriter(std::filesystem::path path, Options options)
    : archive_(archive_name_for(path, options.archive_name)),
      zip_(std::move(path), ZipWriter::Options{64, options.force_zip64}) {}

void TorchCheckpointWriter::check_name(const std::string& name) const {
  if (name.empty()) throw Error(ErrorCode::invalid_argument, zip_.path().string(), "tensor name is empty");
  if (names_.count(name)) throw Error(ErrorCode::invalid_argument, name, "tensor added twice");
}

std::string TorchCheckpointWriter::write_storage(const std::string& subject, DType dtype, const void* data,
                                                 size_t bytes) {
  const size_t element_bytes = dtype_size_bytes(dtype);
  if (element_bytes == 0 || !torch_dtype_name(dtype))
    throw Error(ErrorCode::invalid_argument, subject, "unknown dtype");
  if (bytes % element_bytes)
    throw Error(ErrorCode::invalid_argument, subject,
                cat(bytes, " bytes is not a whole number of ", to_string(dtype), " elements"));
  // Keys count up from 0 as torch.save's do.
  std::string key = std::to_string(storages_.size());
  zip_.add(archive_ + "/data/" + key, data, bytes);
  storages_.emplace(key, Storage{dtype, bytes / element_bytes});
  return key;
}

void TorchCheckpointWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                const void* data, size_t bytes) {
  check_name(name);
  std::optional<uint64_t> numel = element_count(shape);
  if (!numel)
    throw Error(ErrorCode::invalid_argument, name,
                "shape " + shape_text(shape) + " has a negative or huge dimension");
  uint64_t expected = 0;
  if (__builtin_mul_overflow(*numel, uint64_t(dtype_size_bytes(dtype)), &expected) || expected != bytes ||
      dtype_size_bytes(dtype) == 0)
    throw Error(ErrorCode::invalid_argument, name,
                cat("shape ", shape_text(shape), " of ", to_string(dtype), " needs ", expected,
                    " bytes, got ", bytes));
  TorchTensorRecord record;
  record.name = name;
  record.dtype = dtype;
  record.storage_key = write_storage(name, dtype, data, bytes);
  record.storage_numel = *numel;
  record.shape = shape;
  record.stride = row_major_strides(shape);
  names_.emplace(name, records_.size());
  records_.push_back(std::move(record));
}

std::string TorchCheckpointWriter::add_storage(DType dtype, const void* data, size_t bytes) {
  return write_storage(zip_.path().string(), dtype, data, bytes);
}

void TorchCheckpointWriter::add_view(const std::string& name, const std::string& storage_key,
                                     int64_t storage_offset, const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& stride) {
  check_name(name);
  auto storage = storages_.find(storage_key);
  if (storage == storages_.end())
    throw Error(ErrorCode::invalid_argument, name, "no storage with key '" + storage_key + "'");
  std::optional<uint64_t> numel = element_count(shape);
  if (!numel)
    throw Error(ErrorCode::invalid_argument, name,
                "shape " + shape_text(shape) + " has a negative or huge dimension");
  std::vector<int64_t> strides = stride.empty() ? row_major_strides(shape) : stride;
  if (strides.size() != shape.size())
    throw Error(ErrorCode::invalid_argument, name,
                "stride " + shape_text(stride) + " does not match shape " + shape_text(shape));
  // The last element a view reaches; a stride of 0 (broadcast) is allowed as torch allows it.
  uint64_t last = static_cast<uint64_t>(storage_offset);
  bool fits = storage_offset >= 0;
  for (size_t i = 0; i < shape.size() && fits && *numel > 0; ++i) {
    uint64_t reach = 0;
    fits = strides[i] >= 0 &&
           !__builtin_mul_overflow(static_cast<uint64_t>(shape[i] - 1), static_cast<uint64_t>(strides[i]),
                                   &reach) &&
           !__builtin_add_overflow(last, reach, &last);
  }
  if (!fits || (*numel > 0 && last >= storage->second.numel))
    throw Error(
        ErrorCode::invalid_argument, name,
        cat("offset ", storage_offset, ", shape ", shape_text(shape), ", stride ", shape_text(strides),
            " reach beyond storage '", storage_key, "' of ", storage->second.numel, " elements"));
  TorchTensorRecord record;
  record.name = name;
  record.dtype = storage->second.dtype;
  record.storage_key = storage_key;
  record.storage_numel = storage->second.numel;
  record.storage_offset = storage_offset;
  record.shape = shape;
  record.stride = std::move(strides);
  names_.emplace(name, records_.size());
  records_.push_back(std::move(record));
}

void TorchCheckpointWriter::finish() {
  const std::string pickle = write_torch_pickle(records_);
  zip_.add(archive_ + "/data.pkl", pickle.data(), pickle.size());
  static constexpr char kByteOrder[] = "little";
  zip_.add(archive_ + "/byteorder", kByteOrder, sizeof kByteOrder - 1);
  static constexpr char kVersion[] = "3\n";
  zip_.add(archive_ + "/version", kVersion, sizeof kVersion - 1);
  zip_.finish();
}

}  // namespace mugv
