#include "interop/dist_checkpoint.h"

#include "core/error.h"
#include "core/paths.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <iterator>
#include <new>
#include <queue>
#include <system_error>
#include <tuple>
#include <utility>

namespace mugv {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetadataFile = ".metadata";
constexpr const char* kCheckpointModule = "torch.distributed.checkpoint.metadata";
// Holds TensorProperties and MEM_FORMAT_ENCODING in every torch release with DCP (see the header).
constexpr const char* kShardModule = "torch.distributed._shard.sharded_tensor.metadata";

std::string vec_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Element count of a shape; false when it overflows 64 bits.
bool volume(const std::vector<int64_t>& sizes, uint64_t* n) {
  *n = 1;
  for (int64_t d : sizes)
    if (d < 0 || __builtin_mul_overflow(*n, uint64_t(d), n)) return false;
  return true;
}
uint64_t volume(const std::vector<int64_t>& sizes) {
  uint64_t n = 0;
  return volume(sizes, &n) ? n : 0;
}

// The problem with one box (offsets, sizes) of `shape`, or an empty string.
std::string box_problem(const std::vector<int64_t>& shape, const std::vector<int64_t>& off,
                        const std::vector<int64_t>& size) {
  if (off.size() != shape.size() || size.size() != shape.size())
    return "chunk at " + vec_text(off) + " has " + std::to_string(size.size()) + " dimensions, the tensor " +
           std::to_string(shape.size());
  for (size_t k = 0; k < shape.size(); ++k)
    if (off[k] < 0 || size[k] < 0 || size[k] > shape[k] || off[k] > shape[k] - size[k])
      return "chunk at " + vec_text(off) + " of size " + vec_text(size) + " reaches outside shape " +
             vec_text(shape);
  return {};
}

using Boxes = std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>>;

// Chunks split along three or more dimensions are compared pair by pair (along the dimension that sorts
// them best); more than this many are refused rather than compared for minutes.
constexpr size_t kMaxPairwiseChunks = 4096;

struct TilingProblem {
  std::string text;          // empty: the chunks tile the tensor
  bool unsupported = false;  // too many chunks to check, not a damaged tiling
};

// Checks that `boxes` (offsets, sizes) lie inside `shape`, do not overlap and cover it whole.
TilingProblem tiling_problem(const std::vector<int64_t>& shape, const Boxes& boxes) {
  const size_t dims = shape.size();
  uint64_t total = 0;
  if (!volume(shape, &total)) return {"shape " + vec_text(shape) + " is negative or too large"};
  uint64_t covered = 0;
  std::vector<size_t> held;  // the boxes holding elements: only those can overlap
  for (size_t i = 0; i < boxes.size(); ++i) {
    const auto& [off, size] = boxes[i];
    if (auto problem = box_problem(shape, *off, *size); !problem.empty()) return {problem};
    const uint64_t n = volume(*size);  // the box lies inside the shape, so neither this nor the sum overflows
    covered += n;
    if (n > 0) held.push_back(i);
  }
  auto off = [&](size_t i, size_t k) { return (*boxes[i].first)[k]; };
  auto end = [&](size_t i, size_t k) { return (*boxes[i].first)[k] + (*boxes[i].second)[k]; };
  auto overlap = [&](size_t i, size_t j) -> TilingProblem {
    return {"chunks at " + vec_text(*boxes[i].first) + " and " + vec_text(*boxes[j].first) + " overlap"};
  };
  // The dimensions along which some box does not span the whole tensor. Along the others every box meets
  // every other, so these alone decide whether two boxes meet.
  std::vector<size_t> split;
  for (size_t k = 0; k < dims; ++k)
    for (size_t i : held)
      if (off(i, k) != 0 || end(i, k) != shape[k]) {
        split.push_back(k);
        break;
      }
  auto sorted_by = [&](size_t k) {
    std::vector<size_t> order = held;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return off(a, k) < off(b, k); });
    return order;
  };
  if (split.empty()) {
    if (held.size() > 1) return overlap(held[0], held[1]);
  } else if (split.size() == 1) {
    // Intervals: sorted by start, each must begin at or after the furthest end so far.
    const size_t k = split[0];
    size_t furthest = 0;
    bool any = false;
    for (size_t i : sorted_by(k)) {
      if (any && off(i, k) < end(furthest, k)) return overlap(furthest, i);
      if (!any || end(i, k) > end(furthest, k)) furthest = i;
      any = true;
    }
  } else if (split.size() == 2) {
    // Rectangles, swept along the first split dimension: the boxes still open there all share the sweep
    // position, so (the tiling being sound so far) their intervals along the second are disjoint, and a
    // new box need only be compared with its two neighbours among them.
    const size_t a = split[0], b = split[1];
    std::map<int64_t, size_t> open;              // start along b -> box
    using Closing = std::pair<int64_t, size_t>;  // end along a, box
    std::priority_queue<Closing, std::vector<Closing>, std::greater<Closing>> closing;
    for (size_t i : sorted_by(a)) {
      while (!closing.empty() && closing.top().first <= off(i, a)) {
        open.erase(off(closing.top().second, b));
        closing.pop();
      }
      auto next = open.lower_bound(off(i, b));
      if (next != open.end() && next->first < end(i, b)) return overlap(next->second, i);
      if (next != open.begin() && end(std::prev(next)->second, b) > off(i, b))
        return overlap(std::prev(next)->second, i);
      open.emplace(off(i, b), i);
      closing.emplace(end(i, a), i);
    }
  } else {
    if (held.size() > kMaxPairwiseChunks)
      return {std::to_string(held.size()) + " chunks split along " + std::to_string(split.size()) +
                  " dimensions; more than " + std::to_string(kMaxPairwiseChunks) + " are not checked",
              true};
    // Sorted along the split dimension with the most distinct starts, a box can only meet the ones after it
    // that start before its end there.
    size_t sweep = split[0], most = 0;
    for (size_t k : split) {
      std::vector<int64_t> starts;
      for (size_t i : held) starts.push_back(off(i, k));
      std::sort(starts.begin(), starts.end());
      const size_t distinct = size_t(std::unique(starts.begin(), starts.end()) - starts.begin());
      if (distinct > most) {
        most = distinct;
        sweep = k;
      }
    }
    const std::vector<size_t> order = sorted_by(sweep);
    for (size_t x = 0; x < order.size(); ++x)
      for (size_t y = x + 1; y < order.size() && off(order[y], sweep) < end(order[x], sweep); ++y) {
        bool meet = true;
        for (size_t k : split)
          meet = meet && off(order[x], k) < end(order[y], k) && off(order[y], k) < end(order[x], k);
        if (meet) return overlap(order[x], order[y]);
      }
  }
  if (covered != total)
    return {"chunks cover " + std::to_string(covered) + " of the " + std::to_string(total) +
            " elements of shape " + vec_text(shape)};
  return {};
}

// Copies the box `extent` from `src` (row-major `src_shape`, starting at `src_start`) to `dst` (row-major
// `dst_shape`, at `dst_start`).
void copy_box(const uint8_t* src, const std::vector<int64_t>& src_shape,
              const std::vector<int64_t>& src_start, uint8_t* dst, const std::vector<int64_t>& dst_shape,
              const std::vector<int64_t>& dst_start, const std::vector<int64_t>& extent, size_t elem) {
  const size_t dims = extent.size();
  for (int64_t e : extent)
    if (e == 0) return;
  if (dims == 0) {
    std::memcpy(dst, src, elem);
    return;
  }
  auto strides = [](const std::vector<int64_t>& shape) {
    std::vector<int64_t> s(shape.size(), 1);
    for (size_t k = shape.size() - 1; k-- > 0;) s[k] = s[k + 1] * shape[k + 1];
    return s;
  };
  const auto ss = strides(src_shape), ds = strides(dst_shape);
  const size_t last = dims - 1;
  const size_t row = size_t(extent[last]) * elem;
  std::vector<int64_t> index(dims, 0);
  while (true) {
    int64_t s = 0, d = 0;
    for (size_t k = 0; k < dims; ++k) {
      s += (src_start[k] + index[k]) * ss[k];
      d += (dst_start[k] + index[k]) * ds[k];
    }
    std::memcpy(dst + size_t(d) * elem, src + size_t(s) * elem, row);
    size_t k = last;
    while (true) {
      if (k == 0) return;
      --k;
      if (++index[k] < extent[k]) break;
      index[k] = 0;
    }
  }
}

// A storage path must stay inside the checkpoint folder.
bool safe_relative(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  for (const auto& part : fs::path(p))
    if (part == ".." || part == ".") return false;
  return true;
}

// ---- reading the metadata pickle -----------------------------------------------------------------------

// What one name or shape in .metadata may hold. Each is copied wherever it is used (into every chunk, every
// key), and the pickle may use one memoized value any number of times, so each is bounded: far above what
// any checkpoint holds, far below what would let a small file take much memory.
constexpr size_t kMaxText = 4096;  // bytes of a key or a relative path
constexpr size_t kMaxDims = 64;    // dimensions of a shape, offsets or sizes

const std::string& bounded_text(const PickleValue& v, const std::string& what) {
  const std::string& text = v.as_string(what);
  if (text.size() > kMaxText)
    throw Error(ErrorCode::format, what + " is " + std::to_string(text.size()) + " bytes long; more than " +
                                       std::to_string(kMaxText) + " are not read");
  return text;
}

std::vector<int64_t> bounded_ints(const PickleValue& v, const std::string& what) {
  // torch.Size((ints...)) or a plain tuple / list: its length is checked before it is copied.
  const PickleValue* seq = v.is_object_of("Size", "torch") && v.args.size() == 1 ? v.args[0].get() : &v;
  if ((seq->is(PickleKind::tuple) || seq->is(PickleKind::list)) && seq->items.size() > kMaxDims)
    throw Error(ErrorCode::format, what + " has " + std::to_string(seq->items.size()) +
                                       " dimensions; more than " + std::to_string(kMaxDims) +
                                       " are not read");
  return v.as_int_list(what);
}

const PickleValue& field(const PickleValue& obj, const char* name, const std::string& what) {
  const PickleValue* v = obj.find(name);
  if (!v) throw Error(ErrorCode::format, what + " (" + obj.describe() + ") has no field '" + name + "'");
  return *v;
}

DType properties_dtype(const PickleValue& props, const std::string& what) {
  if (!props.is(PickleKind::object) || props.class_name().find("TensorProperties") == std::string::npos)
    throw Error(ErrorCode::format, what + ": properties are " + props.describe() + ", not TensorProperties");
  const PickleValue* dtype = nullptr;
  // __getstate__ gives (dtype, layout, requires_grad, memory format encoding, pin_memory); a dataclass
  // pickled without it gives its __dict__.
  if (props.state && props.state->is(PickleKind::tuple) && !props.state->items.empty())
    dtype = props.state->items[0].get();
  else
    dtype = props.find("dtype");
  if (!dtype) throw Error(ErrorCode::format, what + ": TensorProperties without a dtype");
  if (!dtype->is(PickleKind::global) || dtype->text != "torch")
    throw Error(ErrorCode::format, what + ": dtype is " + dtype->describe() + ", not torch.<dtype>");
  const auto d = dtype_from_torch_name(dtype->name);
  if (!d) throw Error(ErrorCode::unsupported, what + ": dtype torch." + dtype->name + " is not read");
  return *d;
}

struct StorageKey {
  std::string fqn;
  std::vector<int64_t> offset;
  bool operator<(const StorageKey& o) const { return std::tie(fqn, offset) < std::tie(o.fqn, o.offset); }
};
struct StorageInfo {
  std::string file;
  uint64_t offset = 0, length = 0;
  bool claimed = false;  // by a chunk or an object
};

// ---- writing the metadata pickle -----------------------------------------------------------------------

PickleRef torch_size(const std::vector<int64_t>& v) {
  std::vector<PickleRef> items;
  for (int64_t x : v) items.push_back(make_int(x));
  return make_reduce(make_global("torch", "Size"), {make_tuple(std::move(items))});
}

PickleRef dataclass(const char* module, const char* cls,
                    std::vector<std::pair<PickleRef, PickleRef>> fields) {
  return make_newobj(make_global(module, cls), {}, fields.empty() ? nullptr : make_dict(std::move(fields)));
}

}  // namespace

// ---- reader --------------------------------------------------------------------------------------------

DistCheckpointReader::DistCheckpointReader(DistCheckpointReader&&) noexcept = default;
DistCheckpointReader& DistCheckpointReader::operator=(DistCheckpointReader&&) noexcept = default;
DistCheckpointReader::~DistCheckpointReader() = default;

DistCheckpointReader DistCheckpointReader::open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(ErrorCode::not_found, dir.string(), "no such checkpoint folder");
  const fs::path meta_path = dir / kMetadataFile;
  if (!fs::exists(meta_path, ec))
    throw Error(ErrorCode::not_found, meta_path.string(),
                "no .metadata: not a torch.distributed.checkpoint (torch_dist) folder, or an unfinished one");
  const std::string subject = meta_path.string();
  const MappedFile meta = MappedFile::open(meta_path);
  const PickleRef root = parse_pickle(meta.data(), size_t(meta.size_bytes()), subject);

  DistCheckpointReader r;
  r.dir_ = dir;
  std::map<StorageKey, StorageInfo> storage;
  try {
    const PickleValue& md = *root;
    if (!md.is(PickleKind::object) || !md.find("state_dict_metadata"))
      throw Error(ErrorCode::format, "the pickled root is " + md.describe() + ", not a checkpoint Metadata");
    if (const PickleValue* version = md.find("version"); version && version->is(PickleKind::string))
      r.version_ = version->text;

    const PickleValue& sd = field(md, "storage_data", "Metadata");
    if (!sd.is(PickleKind::dict))
      throw Error(ErrorCode::format, "storage_data is " + sd.describe() + ", not a dict");
    for (const auto& [index, info] : sd.entries) {
      const std::string& fqn = bounded_text(field(*index, "fqn", "a storage_data key"), "MetadataIndex.fqn");
      StorageKey key{fqn, {}};
      if (const PickleValue* off = index->find("offset"); off && !off->is(PickleKind::none))
        key.offset = bounded_ints(*off, "MetadataIndex.offset of '" + fqn + "'");
      const std::string what = "storage of '" + fqn + "'";
      if (const PickleValue* t = info->find("transform_descriptors");
          t && !t->is(PickleKind::none) && !t->as_sequence(what).empty()) {
        std::string names;
        for (const auto& d : t->items) names += (names.empty() ? "" : ", ") + d->describe();
        throw Error(ErrorCode::unsupported,
                    what + " is stored through stream transforms (" + names + "), which are not read");
      }
      StorageInfo s;
      s.file = bounded_text(field(*info, "relative_path", what), what + ": relative_path");
      const int64_t offset = field(*info, "offset", what).as_int(what + ": offset");
      const int64_t length = field(*info, "length", what).as_int(what + ": length");
      if (offset < 0 || length < 0) throw Error(ErrorCode::format, what + ": negative offset or length");
      if (!safe_relative(s.file))
        throw Error(ErrorCode::format, what + ": path '" + s.file + "' leaves the checkpoint folder");
      s.offset = uint64_t(offset);
      s.length = uint64_t(length);
      storage[key] = s;
    }

    const PickleValue& sdm = field(md, "state_dict_metadata", "Metadata");
    if (!sdm.is(PickleKind::dict))
      throw Error(ErrorCode::format, "state_dict_metadata is " + sdm.describe() + ", not a dict");
    for (const auto& [k, entry] : sdm.entries) {
      const std::string& name = bounded_text(*k, "a state_dict_metadata key");
      const std::string what = "'" + name + "'";
      if (entry->is_object_of("BytesStorageMetadata")) {
        auto it = storage.find({name, {}});
        if (it == storage.end())
          throw Error(ErrorCode::corrupt, "object " + what + " has no storage_data entry");
        it->second.claimed = true;
        r.objects_[name] = DistObject{name, it->second.file, it->second.offset, it->second.length};
        continue;
      }
      if (!entry->is_object_of("TensorStorageMetadata"))
        throw Error(ErrorCode::unsupported, what + " is " + entry->describe() +
                                                ", neither TensorStorageMetadata nor BytesStorageMetadata");
      DistTensor t;
      t.name = name;
      t.dtype = properties_dtype(field(*entry, "properties", what), what);
      t.shape = bounded_ints(field(*entry, "size", what), what + " size");
      for (const auto& c : field(*entry, "chunks", what).as_sequence(what + " chunks")) {
        DistChunk chunk;
        chunk.offsets = bounded_ints(field(*c, "offsets", what + " chunk"), what + " chunk offsets");
        chunk.sizes = bounded_ints(field(*c, "sizes", what + " chunk"), what + " chunk sizes");
        auto it = storage.find({name, chunk.offsets});
        if (it == storage.end())
          throw Error(ErrorCode::corrupt,
                      what + ": chunk at " + vec_text(chunk.offsets) + " has no storage_data entry");
        // Two chunks at one offset overlap (or, empty, repeat each other): refused here, before a list of
        // one chunk fetched from the memo a million times is copied a million times.
        if (it->second.claimed)
          throw Error(ErrorCode::corrupt, what + ": two chunks at " + vec_text(chunk.offsets));
        it->second.claimed = true;
        chunk.file = it->second.file;
        chunk.file_offset = it->second.offset;
        chunk.length_bytes = it->second.length;
        t.chunks.push_back(std::move(chunk));
      }
      Boxes boxes;
      for (const auto& c : t.chunks) boxes.emplace_back(&c.offsets, &c.sizes);
      if (auto problem = tiling_problem(t.shape, boxes); !problem.text.empty())
        throw Error(problem.unsupported ? ErrorCode::unsupported : ErrorCode::corrupt,
                    what + ": " + problem.text);
      // torch.distributed.checkpoint clones views before saving, so a chunk's archive holds at least its
      // elements' bytes: with the chunks' byte ranges disjoint (checked below), this bounds what reading
      // may allocate by the files' sizes.
      const uint64_t elem = dtype_size_bytes(t.dtype);
      for (const auto& c : t.chunks)
        if (volume(c.sizes) > c.length_bytes / elem)
          throw Error(ErrorCode::corrupt, what + ": chunk at " + vec_text(c.offsets) + " of size " +
                                              vec_text(c.sizes) + " cannot fit its stored " +
                                              std::to_string(c.length_bytes) + " bytes");
      r.tensors_[name] = std::move(t);
    }
  } catch (const Error& e) {
    if (!e.subject().empty()) throw;
    throw Error(e.code(), subject, e.message());
  }

  // Map every file named and check each item lies inside its file.
  auto check_item = [&](const std::string& file, uint64_t offset, uint64_t length, const std::string& what) {
    auto it = r.files_.find(file);
    if (it == r.files_.end()) {
      const fs::path path = dir / file;
      if (!fs::exists(path, ec))
        throw Error(ErrorCode::not_found, path.string(),
                    "missing: it holds " + what + " (named in .metadata)");
      it = r.files_.emplace(file, MappedFile::open(path)).first;
    }
    const uint64_t size = it->second.size_bytes();
    if (offset > size || length > size - offset)
      throw Error(ErrorCode::corrupt, (dir / file).string(),
                  "truncated: " + what + " needs bytes [" + std::to_string(offset) + ", " +
                      std::to_string(offset + length) + "), the file has " + std::to_string(size));
  };
  for (const auto& [name, t] : r.tensors_)
    for (const auto& c : t.chunks)
      check_item(c.file, c.file_offset, c.length_bytes,
                 "the chunk of '" + name + "' at " + vec_text(c.offsets));
  for (const auto& [name, o] : r.objects_)
    check_item(o.file, o.file_offset, o.length_bytes, "object '" + name + "'");

  // torch.distributed.checkpoint appends each item after the last, so no two share a byte. Items that did
  // would let a small file stand for many times its size once read (each chunk is decoded whole), so the
  // sizes of the files would no longer bound what reading allocates.
  struct Item {
    uint64_t offset, length;
    std::string what;
  };
  std::map<std::string, std::vector<Item>> by_file;
  for (const auto& [name, t] : r.tensors_)
    for (const auto& c : t.chunks)
      if (c.length_bytes > 0)
        by_file[c.file].push_back(
            {c.file_offset, c.length_bytes, "the chunk of '" + name + "' at " + vec_text(c.offsets)});
  for (const auto& [name, o] : r.objects_)
    if (o.length_bytes > 0)
      by_file[o.file].push_back({o.file_offset, o.length_bytes, "object '" + name + "'"});
  for (auto& [file, items] : by_file) {
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.offset < b.offset; });
    size_t furthest = 0;  // the item reaching furthest so far
    for (size_t i = 1; i < items.size(); ++i) {
      const Item& f = items[furthest];
      if (items[i].offset < f.offset + f.length)
        throw Error(ErrorCode::corrupt, (dir / file).string(),
                    f.what + " (bytes " + std::to_string(f.offset) + "+" + std::to_string(f.length) +
                        ") and " + items[i].what + " (bytes " + std::to_string(items[i].offset) + "+" +
                        std::to_string(items[i].length) +
                        ") overlap; items of a checkpoint do not share bytes");
      if (items[i].offset + items[i].length > f.offset + f.length) furthest = i;
    }
  }
  return r;
}

const DistTensor* DistCheckpointReader::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const MappedFile& DistCheckpointReader::file(const std::string& relative) const {
  return files_.at(relative);  // open() mapped every file an item names
}

TensorData DistCheckpointReader::read(const std::string& name) const {
  const DistTensor* t = find(name);
  if (!t) throw Error(ErrorCode::not_found, dir_.string(), "no tensor '" + name + "' in the checkpoint");
  return read_region(name, std::vector<int64_t>(t->shape.size(), 0), t->shape);
}

TensorData DistCheckpointReader::read_region(const std::string& name, const std::vector<int64_t>& offsets,
                                             const std::vector<int64_t>& sizes) const {
  const DistTensor* t = find(name);
  if (!t) throw Error(ErrorCode::not_found, dir_.string(), "no tensor '" + name + "' in the checkpoint");
  const size_t dims = t->shape.size();
  bool inside = offsets.size() == dims && sizes.size() == dims;
  for (size_t k = 0; inside && k < dims; ++k)
    inside = offsets[k] >= 0 && sizes[k] >= 0 && offsets[k] <= t->shape[k] - sizes[k];
  if (!inside)
    throw Error(ErrorCode::invalid_argument, dir_.string(),
                "region at " + vec_text(offsets) + " of size " + vec_text(sizes) + " is outside '" + name +
                    "' of shape " + vec_text(t->shape));
  const size_t elem = dtype_size_bytes(t->dtype);
  TensorData out;
  out.dtype = t->dtype;
  out.shape = sizes;
  const uint64_t bytes = volume(sizes) * elem;  // bounded by the files' sizes (open())
  try {
    out.bytes.resize(size_t(bytes));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::out_of_memory, dir_.string(),
                "'" + name + "': cannot allocate " + std::to_string(bytes) + " bytes for the region " +
                    vec_text(sizes));
  }
  if (out.bytes.empty()) return out;

  for (const auto& c : t->chunks) {
    // The part of this chunk inside the region.
    std::vector<int64_t> lo(dims), extent(dims);
    bool meets = true;
    for (size_t k = 0; k < dims && meets; ++k) {
      lo[k] = std::max(offsets[k], c.offsets[k]);
      const int64_t hi = std::min(offsets[k] + sizes[k], c.offsets[k] + c.sizes[k]);
      extent[k] = hi - lo[k];
      meets = extent[k] > 0;
    }
    if (!meets) continue;
    const MappedFile& f = file(c.file);
    const uint8_t* bytes = f.data() + c.file_offset;
    const std::string subject = (dir_ / c.file).string() + " (bytes " + std::to_string(c.file_offset) + "+" +
                                std::to_string(c.length_bytes) + ")";
    const std::string what = "chunk of '" + name + "' at " + vec_text(c.offsets);
    const TorchArchive archive = TorchArchive::parse(bytes, c.length_bytes, subject);
    const TorchTensorHeader header = archive.header(*archive.root(), what);
    if (header.dtype != t->dtype || header.shape != c.sizes)
      throw Error(ErrorCode::corrupt, subject,
                  what + " decodes as " + std::string(to_string(header.dtype)) + " " +
                      vec_text(header.shape) + ", the metadata says " + to_string(t->dtype) + " " +
                      vec_text(c.sizes));
    const TensorData chunk = archive.tensor(*archive.root(), what);
    std::vector<int64_t> src_start(dims), dst_start(dims);
    for (size_t k = 0; k < dims; ++k) {
      src_start[k] = lo[k] - c.offsets[k];
      dst_start[k] = lo[k] - offsets[k];
    }
    copy_box(chunk.bytes.data(), c.sizes, src_start, out.bytes.data(), sizes, dst_start, extent, elem);
    release_mapped_pages(bytes, size_t(c.length_bytes));
  }
  return out;
}

std::string DistCheckpointReader::read_object(const std::string& name) const {
  auto it = objects_.find(name);
  if (it == objects_.end())
    throw Error(ErrorCode::not_found, dir_.string(), "no object '" + name + "' in the checkpoint");
  const MappedFile& f = file(it->second.file);
  return std::string(reinterpret_cast<const char*>(f.data() + it->second.file_offset),
                     size_t(it->second.length_bytes));
}

// ---- writer --------------------------------------------------------------------------------------------

DistCheckpointWriter::DistCheckpointWriter(fs::path dir, Options options) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(ErrorCode::io, dir_.string(), "cannot create the checkpoint folder: " + ec.message());
  const fs::path meta = dir_ / kMetadataFile;
  if (fs::exists(meta, ec)) {
    if (!options.overwrite)
      throw Error(ErrorCode::conflict, dir_.string(),
                  "already holds a checkpoint (.metadata); not overwritten");
    // Without .metadata the old files are no checkpoint, so a failure below cannot leave a mixed one.
    if (!fs::remove(meta, ec) || ec)
      throw Error(ErrorCode::io, meta.string(), "cannot remove the old metadata: " + ec.message());
  }
}

DistCheckpointWriter::~DistCheckpointWriter() = default;

AtomicFileWriter& DistCheckpointWriter::stream(int rank, std::string* relative) {
  if (rank < 0)
    throw Error(ErrorCode::invalid_argument, dir_.string(), "negative rank " + std::to_string(rank));
  *relative = "__" + std::to_string(rank) + "_0.distcp";
  auto it = files_.find(rank);
  if (it == files_.end())
    it = files_.emplace(rank, std::make_unique<AtomicFileWriter>(dir_ / *relative)).first;
  return *it->second;
}

void DistCheckpointWriter::check_name(const std::string& name) const {
  if (finished_) throw Error(ErrorCode::invalid_argument, dir_.string(), "checkpoint already finished");
  if (name.empty()) throw Error(ErrorCode::invalid_argument, dir_.string(), "empty key");
}

void DistCheckpointWriter::add_chunk(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& offsets, const std::vector<int64_t>& sizes,
                                     const void* data, size_t bytes, int rank) {
  check_name(name);
  if (objects_.count(name))
    throw Error(ErrorCode::invalid_argument, dir_.string(), "'" + name + "' is already an object");
  auto [it, fresh] = tensors_.try_emplace(name);
  Pending& p = it->second;
  if (fresh) {
    p.dtype = dtype;
    p.shape = shape;
    tensor_order_.push_back(name);
  } else if (p.dtype != dtype || p.shape != shape) {
    throw Error(ErrorCode::invalid_argument, dir_.string(),
                "'" + name + "': chunk of " + to_string(dtype) + " " + vec_text(shape) + " after chunks of " +
                    to_string(p.dtype) + " " + vec_text(p.shape));
  }
  if (auto problem = box_problem(shape, offsets, sizes); !problem.empty())
    throw Error(ErrorCode::invalid_argument, dir_.string(), "'" + name + "': " + problem);
  for (const auto& c : p.chunks)
    if (c.offsets == offsets)
      throw Error(ErrorCode::invalid_argument, dir_.string(),
                  "'" + name + "': a chunk at " + vec_text(offsets) + " was already added");
  // torch.save(chunk) as torch.distributed.checkpoint's _write_item does.
  const std::string archive = save_torch_tensor(dtype, sizes, data, bytes);
  DistChunk chunk;
  chunk.offsets = offsets;
  chunk.sizes = sizes;
  AtomicFileWriter& out = stream(rank, &chunk.file);
  chunk.file_offset = out.bytes_written();
  chunk.length_bytes = archive.size();
  out.write(archive.data(), archive.size());
  p.chunks.push_back(std::move(chunk));
}

void DistCheckpointWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                      const void* data, size_t bytes, int rank) {
  add_chunk(name, dtype, shape, std::vector<int64_t>(shape.size(), 0), shape, data, bytes, rank);
}

void DistCheckpointWriter::add_object(const std::string& name, const std::string& bytes, int rank) {
  check_name(name);
  if (tensors_.count(name) || objects_.count(name))
    throw Error(ErrorCode::invalid_argument, dir_.string(), "'" + name + "' was already added");
  DistObject o;
  o.name = name;
  AtomicFileWriter& out = stream(rank, &o.file);
  o.file_offset = out.bytes_written();
  o.length_bytes = bytes.size();
  out.write(bytes.data(), bytes.size());
  objects_[name] = std::move(o);
  object_order_.push_back(name);
}

void DistCheckpointWriter::finish() {
  if (finished_) throw Error(ErrorCode::invalid_argument, dir_.string(), "checkpoint already finished");
  for (const auto& name : tensor_order_) {
    const Pending& p = tensors_.at(name);
    Boxes boxes;
    for (const auto& c : p.chunks) boxes.emplace_back(&c.offsets, &c.sizes);
    if (auto problem = tiling_problem(p.shape, boxes); !problem.text.empty())
      throw Error(problem.unsupported ? ErrorCode::unsupported : ErrorCode::invalid_argument, dir_.string(),
                  "'" + name + "': " + problem.text);
  }
  finished_ = true;

  std::vector<std::pair<PickleRef, PickleRef>> sdm, storage;
  auto storage_entry = [&](const std::string& fqn, PickleRef offset, PickleRef index, const std::string& file,
                           uint64_t at, uint64_t length) {
    PickleRef key = dataclass(kCheckpointModule, "MetadataIndex",
                              {{make_string("fqn"), make_string(fqn)},
                               {make_string("offset"), std::move(offset)},
                               {make_string("index"), std::move(index)}});
    PickleRef info = dataclass("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                               {{make_string("relative_path"), make_string(file)},
                                {make_string("offset"), make_int(int64_t(at))},
                                {make_string("length"), make_int(int64_t(length))}});
    storage.emplace_back(std::move(key), std::move(info));
  };
  // Shared globals and the memory-format enum value, as Python memoizes them.
  const PickleRef strided = make_global("torch", "strided");
  const PickleRef contiguous = make_reduce(make_global(kShardModule, "MEM_FORMAT_ENCODING"), {make_int(0)});
  for (const auto& name : tensor_order_) {
    const Pending& p = tensors_.at(name);
    PickleRef props = make_newobj(make_global(kShardModule, "TensorProperties"), {},
                                  make_tuple({make_global("torch", torch_dtype_name(p.dtype)), strided,
                                              make_bool(false), contiguous, make_bool(false)}));
    std::vector<PickleRef> chunks;
    for (size_t i = 0; i < p.chunks.size(); ++i) {
      const DistChunk& c = p.chunks[i];
      chunks.push_back(dataclass(
          kCheckpointModule, "ChunkStorageMetadata",
          {{make_string("offsets"), torch_size(c.offsets)}, {make_string("sizes"), torch_size(c.sizes)}}));
      storage_entry(name, torch_size(c.offsets), make_int(int64_t(i)), c.file, c.file_offset, c.length_bytes);
    }
    sdm.emplace_back(make_string(name), dataclass(kCheckpointModule, "TensorStorageMetadata",
                                                  {{make_string("properties"), props},
                                                   {make_string("size"), torch_size(p.shape)},
                                                   {make_string("chunks"), make_list(std::move(chunks))}}));
  }
  for (const auto& name : object_order_) {
    const DistObject& o = objects_.at(name);
    sdm.emplace_back(make_string(name), dataclass(kCheckpointModule, "BytesStorageMetadata", {}));
    storage_entry(name, make_none(), make_none(), o.file, o.file_offset, o.length_bytes);
  }
  const PickleRef metadata = dataclass(kCheckpointModule, "Metadata",
                                       {{make_string("state_dict_metadata"), make_dict(std::move(sdm))},
                                        {make_string("planner_data"), make_none()},
                                        {make_string("storage_data"), make_dict(std::move(storage))}});
  const std::string pickle = write_pickle(metadata, 4);
  for (auto& [rank, file] : files_) file->commit();
  write_file_atomic(dir_ / kMetadataFile, pickle.data(), pickle.size());
}

}  // namespace mugv
