#include "interop/torch_archive.h"
#include "core/strings.h"

#include "core/error.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

namespace mugv {
namespace {

// How much larger than its storage a materialised view may be (see TorchArchive::view), unless it is small.
constexpr uint64_t kMaxExpansion = 64;
constexpr uint64_t kSmallView = uint64_t(64) << 20;

uint64_t checked_numel(const std::vector<int64_t>& shape, const std::string& subject,
                       const std::string& what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::format, subject, what + ": negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(n, uint64_t(d), &n))
      throw Error(ErrorCode::format, subject, what + ": element count overflows");
  }
  return n;
}

// Copies the view (storage_offset, shape, stride) of `storage` into contiguous `out`. Bounds are checked by
// the caller. Rows along the last dimension are copied whole when that dimension is dense.
void gather(const uint8_t* storage, size_t elem, int64_t offset, const std::vector<int64_t>& shape,
            const std::vector<int64_t>& stride, uint8_t* out) {
  const size_t dims = shape.size();
  for (int64_t d : shape)
    if (d == 0) return;
  // Contiguous (row-major) views are one copy.
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t k = dims; k-- > 0;) {
    if (shape[k] != 1 && stride[k] != expect) contiguous = false;
    expect *= shape[k];
  }
  if (contiguous) {
    std::memcpy(out, storage + size_t(offset) * elem, size_t(expect) * elem);
    return;
  }
  const size_t last = dims - 1;
  const bool dense_rows = stride[last] == 1;
  const int64_t row = shape[last];
  std::vector<int64_t> index(dims, 0);
  size_t written = 0;
  while (true) {
    int64_t base = offset;
    for (size_t k = 0; k < last; ++k) base += index[k] * stride[k];
    if (dense_rows) {
      std::memcpy(out + written, storage + size_t(base) * elem, size_t(row) * elem);
      written += size_t(row) * elem;
    } else {
      for (int64_t j = 0; j < row; ++j) {
        std::memcpy(out + written, storage + size_t(base + j * stride[last]) * elem, elem);
        written += elem;
      }
    }
    // Next index over the leading dimensions (odometer).
    size_t k = last;
    while (k > 0) {
      --k;
      if (++index[k] < shape[k]) break;
      index[k] = 0;
      if (k == 0) return;
    }
    if (last == 0) return;
  }
}

// ---- zip writing (PKWARE APPNOTE 4.3.7 local header, 4.3.12 central header, 4.3.16 end record) --------

void put16(std::string& out, uint32_t v) {
  out += char(v & 0xff);
  out += char((v >> 8) & 0xff);
}
void put32(std::string& out, uint32_t v) {
  put16(out, v & 0xffff);
  put16(out, v >> 16);
}

constexpr uint32_t kAlignment = 64;  // torch's default storage alignment
constexpr uint16_t kDate1980 = (1 << 5) | 1;
constexpr uint16_t kVersionNeeded = 20;

std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  struct Central {
    std::string name;
    uint32_t crc, size, offset, extra;
  };
  std::vector<Central> central;
  std::string out;
  for (const auto& [name, data] : entries) {
    const uint64_t offset = out.size();
    // torch pads the local extra field (id "FB", filled with 'Z') so the data starts aligned.
    const uint64_t start = offset + 30 + name.size();
    uint32_t pad = uint32_t((kAlignment - start % kAlignment) % kAlignment);
    if (pad != 0 && pad < 4) pad += kAlignment;
    if (offset + 30 + name.size() + pad + data.size() > 0xffffffffu || entries.size() >= 0xffff)
      throw Error(ErrorCode::unsupported, name, "torch.save archive over 4 GiB (zip64) is not written here");
    const uint32_t crc = crc32(data.data(), data.size());
    put32(out, 0x04034b50);
    put16(out, kVersionNeeded);
    put16(out, 0);  // flags
    put16(out, 0);  // stored
    put16(out, 0);  // time
    put16(out, kDate1980);
    put32(out, crc);
    put32(out, uint32_t(data.size()));
    put32(out, uint32_t(data.size()));
    put16(out, uint32_t(name.size()));
    put16(out, pad);
    out += name;
    if (pad) {
      out += "FB";
      put16(out, pad - 4);
      out.append(pad - 4, 'Z');
    }
    out += data;
    central.push_back({name, crc, uint32_t(data.size()), uint32_t(offset), pad});
  }
  const uint64_t directory = out.size();
  for (const auto& c : central) {
    put32(out, 0x02014b50);
    put16(out, kVersionNeeded);  // made by
    put16(out, kVersionNeeded);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    put16(out, kDate1980);
    put32(out, c.crc);
    put32(out, c.size);
    put32(out, c.size);
    put16(out, uint32_t(c.name.size()));
    put16(out, 0);  // central extra
    put16(out, 0);  // comment
    put16(out, 0);  // disk
    put16(out, 0);  // internal attributes
    put32(out, 0);  // external attributes
    put32(out, c.offset);
    out += c.name;
  }
  const uint64_t directory_size = out.size() - directory;
  if (out.size() > 0xffffffffu)
    throw Error(ErrorCode::unsupported, "torch.save archive over 4 GiB (zip64) is not written here");
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, uint32_t(central.size()));
  put16(out, uint32_t(central.size()));
  put32(out, uint32_t(directory_size));
  put32(out, uint32_t(directory));
  put16(out, 0);
  return out;
}

}  // namespace

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TorchArchive TorchArchive::parse(const uint8_t* bytes, uint64_t size_bytes, std::string subject) {
  if (!looks_like_zip(bytes, size_bytes))
    throw Error(ErrorCode::format, subject, "not a torch.save zip archive (no zip signature)");
  TorchArchive archive(ZipArchive::parse(bytes, size_bytes, subject), subject);
  const ZipEntry* pickle = nullptr;
  for (const auto& entry : archive.zip_.entries()) {
    const auto slash = entry.name.find('/');
    if (slash != std::string::npos && entry.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      pickle = &entry;
      break;
    }
  }
  if (!pickle)
    throw Error(ErrorCode::format, subject, "zip without <archive>/data.pkl: not a torch.save archive");
  archive.archive_ = pickle->name.substr(0, pickle->name.find('/'));
  if (const ZipEntry* order = archive.zip_.find(archive.archive_ + "/byteorder")) {
    const std::string text(reinterpret_cast<const char*>(archive.zip_.data(*order)),
                           size_t(order->size_bytes));
    if (text != "little")
      throw Error(ErrorCode::unsupported, subject,
                  "byteorder is '" + text + "'; only little-endian data is read");
  }
  archive.zip_.verify_crc(*pickle);
  archive.root_ = parse_pickle(archive.zip_.data(*pickle), size_t(pickle->size_bytes), subject + " data.pkl");
  return archive;
}

namespace {
bool is_parameter(const PickleValue& v) {
  return v.is_object_of("_rebuild_parameter", "torch._utils") ||
         v.is_object_of("_rebuild_parameter_with_state", "torch._utils");
}
}  // namespace

bool TorchArchive::is_tensor(const PickleValue& value) {
  // One Parameter around the tensor, as torch.save writes it and view() reads it (no recursion: a pickle
  // can nest Parameters as deep as its length allows).
  const PickleValue* v = &value;
  if (is_parameter(*v)) {
    if (v->args.empty()) return false;
    v = v->args[0].get();
  }
  return v->is_object_of("_rebuild_tensor_v2", "torch._utils") ||
         v->is_object_of("_rebuild_tensor_v3", "torch._utils");
}

TorchArchive::View TorchArchive::view(const PickleValue& value, const std::string& what) const {
  const PickleValue* v = &value;
  if (is_parameter(*v)) {
    if (v->args.empty()) throw Error(ErrorCode::format, subject_, what + ": Parameter without data");
    v = v->args[0].get();
  }
  const bool v3 = v->is_object_of("_rebuild_tensor_v3", "torch._utils");
  if (!v3 && !v->is_object_of("_rebuild_tensor_v2", "torch._utils"))
    throw Error(ErrorCode::format, subject_, what + " is " + v->describe() + ", not a tensor");
  const size_t needed = v3 ? 7 : 6;
  if (v->args.size() < needed)
    throw Error(ErrorCode::format, subject_,
                what + ": " + v->class_name() + " with " + std::to_string(v->args.size()) + " arguments");

  View out;
  try {
    const PickleValue& storage = *v->args[0];
    if (!storage.is(PickleKind::persistent))
      throw Error(ErrorCode::format, "storage is " + storage.describe() + ", not a persistent id");
    const auto& pid = storage.pid->as_sequence("storage id");
    if (pid.size() < 5 || !pid[0]->is(PickleKind::string) || pid[0]->text != "storage")
      throw Error(ErrorCode::format, "storage id is not ('storage', type, key, location, numel)");
    const PickleValue& type = *pid[1];
    if (!type.is(PickleKind::global))
      throw Error(ErrorCode::format, "storage type is " + type.describe() + ", not a class");
    out.key = pid[2]->as_string("storage key");
    const int64_t numel = pid[4]->as_int("storage numel");
    if (numel < 0) throw Error(ErrorCode::format, "negative storage numel");
    out.storage_numel = uint64_t(numel);
    if (v3) {
      if (type.name != "UntypedStorage")
        throw Error(ErrorCode::format,
                    "_rebuild_tensor_v3 over " + type.class_name() + ", not UntypedStorage");
      const PickleValue& dt = *v->args[6];
      if (!dt.is(PickleKind::global) || dt.text != "torch")
        throw Error(ErrorCode::format, "dtype is " + dt.describe() + ", not torch.<dtype>");
      const auto dtype = dtype_from_torch_name(dt.name);
      if (!dtype) throw Error(ErrorCode::unsupported, "dtype torch." + dt.name + " is not read");
      out.dtype = *dtype;
    } else {
      const auto dtype = dtype_of_torch_storage_class(type.name);
      if (!dtype) throw Error(ErrorCode::unsupported, "storage class " + type.class_name() + " is not read");
      out.dtype = *dtype;
    }
    const size_t elem = dtype_size_bytes(out.dtype);
    if (v3) {
      // An untyped storage counts bytes.
      if (out.storage_numel % elem != 0)
        throw Error(ErrorCode::format, "untyped storage is not whole elements");
      out.storage_numel /= elem;
    }
    out.offset = v->args[1]->as_int("storage offset");
    out.shape = v->args[2]->as_int_list("size");
    out.stride = v->args[3]->as_int_list("stride");
  } catch (const Error& e) {
    if (!e.subject().empty()) throw;
    throw Error(e.code(), subject_, what + ": " + e.message());
  }
  if (out.stride.size() != out.shape.size())
    throw Error(ErrorCode::format, subject_,
                what + ": " + std::to_string(out.stride.size()) + " strides for " +
                    std::to_string(out.shape.size()) + " dimensions");
  if (out.offset < 0) throw Error(ErrorCode::format, subject_, what + ": negative storage offset");
  for (int64_t st : out.stride)
    if (st < 0) throw Error(ErrorCode::format, subject_, what + ": negative stride");
  const size_t elem = dtype_size_bytes(out.dtype);
  const uint64_t numel = checked_numel(out.shape, subject_, what);
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(elem), &bytes) || bytes > (uint64_t(1) << 48))
    throw Error(ErrorCode::format, subject_, what + ": " + shape_string(out.shape) + " is too large");
  // The last element the view reaches must lie inside the storage (checked without overflow).
  if (numel > 0) {
    uint64_t last = uint64_t(out.offset);
    bool overflow = false;
    for (size_t k = 0; k < out.shape.size(); ++k) {
      uint64_t reach = 0;
      overflow |= __builtin_mul_overflow(uint64_t(out.shape[k] - 1), uint64_t(out.stride[k]), &reach);
      overflow |= __builtin_add_overflow(last, reach, &last);
    }
    if (overflow || last >= out.storage_numel)
      throw Error(ErrorCode::corrupt, subject_,
                  what + ": view " + shape_string(out.shape) + " at offset " + std::to_string(out.offset) +
                      " reaches past its storage of " + std::to_string(out.storage_numel) + " elements");
  }
  // A view inside its storage can still read elements many times over (a stride of 0: an expanded
  // tensor), so a few bytes of storage could stand for terabytes. Materialised, it may take at most
  // kMaxExpansion times its storage's bytes, or kSmallView bytes. (The storage's declared size is checked
  // against its zip entry before anything is allocated.)
  uint64_t storage_bytes = 0;
  if (__builtin_mul_overflow(out.storage_numel, uint64_t(elem), &storage_bytes)) storage_bytes = UINT64_MAX;
  if (bytes > kSmallView && bytes / kMaxExpansion > storage_bytes)
    throw Error(ErrorCode::unsupported, subject_,
                what + ": view " + shape_string(out.shape) + " with strides " + shape_string(out.stride) +
                    " would take " + std::to_string(bytes) + " bytes from a storage of " +
                    std::to_string(storage_bytes) + " (an expanded tensor); more than " +
                    std::to_string(kMaxExpansion) + " times its storage is not materialised");
  return out;
}

TorchTensorHeader TorchArchive::header(const PickleValue& value, const std::string& what) const {
  View v = view(value, what);
  return {v.dtype, std::move(v.shape)};
}

TensorData TorchArchive::tensor(const PickleValue& value, const std::string& what) const {
  View v = view(value, what);
  const size_t elem = dtype_size_bytes(v.dtype);
  const std::string entry_name = archive_ + "/data/" + v.key;
  const ZipEntry* entry = zip_.find(entry_name);
  if (!entry) throw Error(ErrorCode::corrupt, subject_, what + ": storage " + entry_name + " is missing");
  uint64_t storage_bytes = 0;
  if (__builtin_mul_overflow(v.storage_numel, uint64_t(elem), &storage_bytes) ||
      entry->size_bytes < storage_bytes)
    throw Error(ErrorCode::corrupt, subject_,
                what + ": storage " + entry_name + " holds " + std::to_string(entry->size_bytes) +
                    " bytes, less than the " + std::to_string(v.storage_numel) + " elements declared");
  zip_.verify_crc(*entry);
  TensorData out;
  out.dtype = v.dtype;
  out.shape = std::move(v.shape);
  const uint64_t bytes = uint64_t(out.numel()) * elem;  // at most 2^48 (view())
  try {
    out.bytes.resize(size_t(bytes));
  } catch (const std::bad_alloc&) {
    throw Error(
        ErrorCode::out_of_memory, subject_,
        what + ": cannot allocate " + std::to_string(bytes) + " bytes for " + shape_string(out.shape));
  }
  if (!out.bytes.empty()) gather(zip_.data(*entry), elem, v.offset, out.shape, v.stride, out.bytes.data());
  return out;
}

TensorData TorchArchive::single_tensor() const {
  return tensor(*root_, "the saved tensor");
}

std::vector<std::pair<std::string, TensorData>> TorchArchive::tensor_dict() const {
  const PickleValue& root = *root_;
  const bool ordered = root.is_object_of("OrderedDict", "collections");
  if (!root.is(PickleKind::dict) && !ordered)
    throw Error(ErrorCode::format, subject_, "the saved object is " + root.describe() + ", not a dict");
  // One tensor may stand under many keys (the memo), each key getting its own copy: the copies together
  // are bounded as one view is, by kMaxExpansion times the archive's bytes (or kSmallView).
  uint64_t stored = 0;
  for (const auto& entry : zip_.entries()) stored += entry.size_bytes;
  const uint64_t budget =
      std::max(kSmallView, stored > UINT64_MAX / kMaxExpansion ? UINT64_MAX : stored * kMaxExpansion);
  uint64_t total = 0;
  std::vector<std::pair<std::string, TensorData>> out;
  for (const auto& [k, v] : root.entries) {
    if (!k->is(PickleKind::string))
      throw Error(ErrorCode::format, subject_, "dict key " + k->describe() + " is not a str");
    if (!is_tensor(*v)) continue;
    const std::string what = "'" + k->text + "'";
    const TorchTensorHeader h = header(*v, what);
    total += checked_numel(h.shape, subject_, what) * dtype_size_bytes(h.dtype);  // each <= 2^48 (view())
    if (total > budget)
      throw Error(ErrorCode::unsupported, subject_,
                  "the dict's tensors up to " + what + " would take " + std::to_string(total) +
                      " bytes, more than " + std::to_string(kMaxExpansion) + " times the archive's " +
                      std::to_string(stored) + " (one tensor under many keys?)");
    out.emplace_back(k->text, tensor(*v, what));
  }
  return out;
}

TorchArchiveWriter::TorchArchiveWriter(std::string archive_name) : archive_(std::move(archive_name)) {
  if (archive_.empty() || archive_.find('/') != std::string::npos)
    throw Error(ErrorCode::invalid_argument,
                "archive name '" + archive_ + "' must be one non-empty folder name");
}

PickleRef TorchArchiveWriter::add_tensor(DType dtype, const std::vector<int64_t>& shape, const void* data,
                                         size_t bytes) {
  if (finished_) throw Error(ErrorCode::invalid_argument, "torch archive already finished");
  const char* dtype_name = torch_dtype_name(dtype);
  if (!dtype_name || dtype_size_bytes(dtype) == 0)
    throw Error(ErrorCode::invalid_argument, "tensor of unknown dtype");
  for (int64_t d : shape)
    if (d < 0)
      throw Error(ErrorCode::invalid_argument, "tensor " + shape_string(shape) + " has a negative dimension");
  const uint64_t numel = checked_numel(shape, archive_, "tensor");
  const size_t elem = dtype_size_bytes(dtype);
  if (numel * elem != bytes)
    throw Error(ErrorCode::invalid_argument, "tensor " + shape_string(shape) + " of " + dtype_name +
                                                 " needs " + std::to_string(numel * elem) + " bytes, got " +
                                                 std::to_string(bytes));
  const std::string key = std::to_string(storages_.size());
  storages_.emplace_back(key, std::string(static_cast<const char*>(data), bytes));

  std::vector<PickleRef> sizes, strides;
  int64_t step = 1;
  strides.resize(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    strides[k] = make_int(step);
    step *= shape[k];
  }
  for (int64_t d : shape) sizes.push_back(make_int(d));
  const char* storage_class = torch_storage_class(dtype);
  // Dtypes without a typed storage class go through UntypedStorage and _rebuild_tensor_v3, as torch does.
  PickleRef pid = make_tuple(
      {make_string("storage"), make_global("torch", storage_class ? storage_class : "UntypedStorage"),
       make_string(key), make_string("cpu"), make_int(int64_t(storage_class ? numel : numel * elem))});
  std::vector<PickleRef> args{make_persistent(pid),
                              make_int(0),
                              make_tuple(std::move(sizes)),
                              make_tuple(std::move(strides)),
                              make_bool(false),
                              make_reduce(make_global("collections", "OrderedDict"), {})};
  if (!storage_class) args.push_back(make_global("torch", dtype_name));
  return make_reduce(make_global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3"),
                     std::move(args));
}

std::string TorchArchiveWriter::finish(const PickleRef& root) {
  if (finished_) throw Error(ErrorCode::invalid_argument, "torch archive already finished");
  finished_ = true;
  // torch.save's record order: data.pkl, byteorder, the storages, version.
  std::vector<std::pair<std::string, std::string>> entries;
  entries.emplace_back(archive_ + "/data.pkl", write_pickle(root, 2));
  entries.emplace_back(archive_ + "/byteorder", "little");
  for (auto& [key, bytes] : storages_) entries.emplace_back(archive_ + "/data/" + key, std::move(bytes));
  entries.emplace_back(archive_ + "/version", "3\n");
  storages_.clear();
  return stored_zip(entries);
}

std::string save_torch_tensor(DType dtype, const std::vector<int64_t>& shape, const void* data,
                              size_t bytes) {
  TorchArchiveWriter writer;
  PickleRef tensor = writer.add_tensor(dtype, shape, data, bytes);
  return writer.finish(tensor);
}

std::string save_torch_object(const PickleRef& root) {
  return TorchArchiveWriter().finish(root);
}

}  // namespace mugv
