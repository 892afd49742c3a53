#include "interop/hand_assembly.h"

#include "core/zip_archive.h"

#include <cstring>

namespace mugv::test {
namespace {

void le(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out += char((v >> (8 * i)) & 0xff);
}

}  // namespace

PickleBytes& PickleBytes::op(uint8_t code) {
  bytes += char(code);
  return *this;
}
PickleBytes& PickleBytes::proto(int version) {
  op(0x80);
  bytes += char(version);
  return *this;
}
PickleBytes& PickleBytes::binint1(uint8_t v) {
  op('K');
  le(bytes, v, 1);
  return *this;
}
PickleBytes& PickleBytes::binint2(uint16_t v) {
  op('M');
  le(bytes, v, 2);
  return *this;
}
PickleBytes& PickleBytes::binint(int32_t v) {
  op('J');
  le(bytes, uint32_t(v), 4);
  return *this;
}
PickleBytes& PickleBytes::long1(int64_t v) {
  op(0x8a);
  bytes += char(8);
  le(bytes, uint64_t(v), 8);
  return *this;
}
PickleBytes& PickleBytes::binfloat(double v) {
  op('G');
  uint64_t bits = 0;
  std::memcpy(&bits, &v, 8);
  for (int i = 7; i >= 0; --i) bytes += char((bits >> (8 * i)) & 0xff);  // big-endian
  return *this;
}
PickleBytes& PickleBytes::binunicode(const std::string& s) {
  op('X');
  le(bytes, s.size(), 4);
  bytes += s;
  return *this;
}
PickleBytes& PickleBytes::short_binunicode(const std::string& s) {
  op(0x8c);
  le(bytes, s.size(), 1);
  bytes += s;
  return *this;
}
PickleBytes& PickleBytes::short_binbytes(const std::string& s) {
  op('C');
  le(bytes, s.size(), 1);
  bytes += s;
  return *this;
}
PickleBytes& PickleBytes::global(const std::string& module, const std::string& name) {
  op('c');
  bytes += module + "\n" + name + "\n";
  return *this;
}
PickleBytes& PickleBytes::stack_global(const std::string& module, const std::string& name) {
  const std::string key = module + "." + name;
  auto it = globals_.find(key);
  if (it != globals_.end()) return binget(uint8_t(it->second));
  short_binunicode(module).memoize();
  short_binunicode(name).memoize();
  op(0x93);
  globals_[key] = memo_;
  return memoize();
}
PickleBytes& PickleBytes::binput(uint8_t index) {
  op('q');
  le(bytes, index, 1);
  return *this;
}
PickleBytes& PickleBytes::binget(uint8_t index) {
  op('h');
  le(bytes, index, 1);
  return *this;
}
PickleBytes& PickleBytes::memoize() {
  ++memo_;
  return op(0x94);
}
void PickleBytes::frame_after_proto() {
  // PROTO is 2 bytes; the frame covers the rest.
  const std::string rest = bytes.substr(2);
  std::string head = bytes.substr(0, 2);
  head += char(0x95);
  le(head, rest.size(), 8);
  bytes = head + rest;
}

std::string torch_style_zip(const std::vector<ZipRecord>& records) {
  struct Central {
    std::string name;
    uint32_t crc, size, offset;
  };
  std::vector<Central> central;
  std::string out;
  for (const auto& r : records) {
    const uint64_t offset = out.size();
    const uint64_t start = offset + 30 + r.name.size();
    uint32_t pad = uint32_t((64 - start % 64) % 64);
    if (pad != 0 && pad < 4) pad += 64;
    const uint32_t crc = crc32(r.data.data(), r.data.size());
    le(out, 0x04034b50, 4);
    le(out, 0, 2);       // version needed (miniz writes 0 for stored entries)
    le(out, 0x0808, 2);  // bit 3: sizes in a data descriptor; bit 11: UTF-8 names
    le(out, 0, 2);       // stored
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0, 4);  // CRC and sizes follow the data
    le(out, 0, 4);
    le(out, 0, 4);
    le(out, r.name.size(), 2);
    le(out, pad, 2);
    out += r.name;
    if (pad) {
      out += "FB";
      le(out, pad - 4, 2);
      out.append(pad - 4, 'Z');
    }
    out += r.data;
    le(out, 0x08074b50, 4);  // data descriptor
    le(out, crc, 4);
    le(out, r.data.size(), 4);
    le(out, r.data.size(), 4);
    central.push_back({r.name, crc, uint32_t(r.data.size()), uint32_t(offset)});
  }
  const uint64_t dir = out.size();
  for (const auto& c : central) {
    le(out, 0x02014b50, 4);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0x0808, 2);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, c.crc, 4);
    le(out, c.size, 4);
    le(out, c.size, 4);
    le(out, c.name.size(), 2);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0, 2);
    le(out, 0, 4);
    le(out, c.offset, 4);
    out += c.name;
  }
  const uint64_t dir_size = out.size() - dir;
  // torch's writer always ends with the zip64 end record and its locator before the classic end record.
  const uint64_t zip64_end = out.size();
  le(out, 0x06064b50, 4);
  le(out, 44, 8);   // size of the rest of this record
  le(out, 798, 2);  // made by: unix, 3.0
  le(out, 45, 2);   // needed: zip64
  le(out, 0, 4);
  le(out, 0, 4);
  le(out, central.size(), 8);
  le(out, central.size(), 8);
  le(out, dir_size, 8);
  le(out, dir, 8);
  le(out, 0x07064b50, 4);
  le(out, 0, 4);
  le(out, zip64_end, 8);
  le(out, 1, 4);
  le(out, 0x06054b50, 4);
  le(out, 0, 2);
  le(out, 0, 2);
  le(out, central.size(), 2);
  le(out, central.size(), 2);
  le(out, dir_size, 4);
  le(out, dir, 4);
  le(out, 0, 2);
  return out;
}

std::string hand_tensor_archive(const std::string& storage_class, const std::string& storage_bytes,
                                int64_t storage_elements, int64_t offset, const std::vector<int64_t>& shape,
                                const std::vector<int64_t>& stride, const std::string& archive) {
  // torch/_tensor.py _reduce_ex_internal: _rebuild_tensor_v2(storage, storage_offset, size, stride,
  // requires_grad, backward_hooks), the storage by persistent id.
  PickleBytes p;
  p.proto(2).global("torch._utils", "_rebuild_tensor_v2").binput(0);
  p.mark();
  p.mark().binunicode("storage").binput(1).global("torch", storage_class).binput(2).binunicode("0").binput(3);
  p.binunicode("cpu").binput(4).binint(int32_t(storage_elements)).op('t').binput(5).op('Q');
  p.binint(int32_t(offset));
  p.mark();
  for (int64_t d : shape) p.binint(int32_t(d));
  p.op('t').binput(6);
  p.mark();
  for (int64_t s : stride) p.binint(int32_t(s));
  p.op('t').binput(7);
  p.boolean(false);
  p.global("collections", "OrderedDict").binput(8).op(')').op('R').binput(9);
  p.op('t').binput(10).op('R').binput(11).stop();
  return torch_style_zip({{archive + "/data.pkl", p.bytes},
                          {archive + "/byteorder", "little"},
                          {archive + "/data/0", storage_bytes},
                          {archive + "/version", "3\n"},
                          {archive + "/.data/serialization_id", "1234567890"}});
}

namespace {

void torch_size(PickleBytes& p, const std::vector<int64_t>& v) {
  p.stack_global("torch", "Size");
  p.mark();
  for (int64_t x : v) {
    if (x < 256)
      p.binint1(uint8_t(x));
    else
      p.binint(int32_t(x));
  }
  p.op('t').memoize().op(0x85).memoize().op('R').memoize();
}

// A dataclass instance: cls, EMPTY_TUPLE, NEWOBJ, MEMOIZE, then its __dict__ (built by `fields`) and BUILD.
template <typename Fields>
void dataclass(PickleBytes& p, const char* module, const char* cls, Fields fields) {
  p.stack_global(module, cls).op(')').op(0x81).memoize();
  p.op('}').memoize().mark();
  fields();
  p.op('u').op('b');
}

}  // namespace

std::string hand_dcp_metadata(const std::vector<HandTensor>& tensors, const std::vector<HandObject>& objects,
                              bool new_torch) {
  const char* md = "torch.distributed.checkpoint.metadata";
  const char* props_module = new_torch ? md : "torch.distributed._shard.sharded_tensor.metadata";
  const char* enum_name = new_torch ? "_MEM_FORMAT_ENCODING" : "MEM_FORMAT_ENCODING";
  PickleBytes p;
  // A str as Python's pickler writes it at protocol 4: SHORT_BINUNICODE below 256 bytes, BINUNICODE above.
  auto text = [&p](const std::string& s) -> PickleBytes& {
    return s.size() < 256 ? p.short_binunicode(s) : p.binunicode(s);
  };
  p.proto(4);
  dataclass(p, md, "Metadata", [&] {
    p.short_binunicode("state_dict_metadata").memoize();
    p.op('}').memoize().mark();
    for (const auto& t : tensors) {
      text(t.name).memoize();
      dataclass(p, md, "TensorStorageMetadata", [&] {
        p.short_binunicode("properties").memoize();
        // TensorProperties.__getstate__: (dtype, layout, requires_grad, memory format encoding, pin_memory)
        p.stack_global(props_module, "TensorProperties").op(')').op(0x81).memoize();
        p.mark().stack_global("torch", t.dtype).stack_global("torch", "strided").boolean(false);
        p.stack_global(props_module, enum_name).binint1(0).op(0x85).memoize().op('R').memoize();
        p.boolean(false).op('t').memoize().op('b');
        p.short_binunicode("size").memoize();
        torch_size(p, t.shape);
        p.short_binunicode("chunks").memoize();
        p.op(']').memoize().mark();
        for (const auto& c : t.chunks) {
          dataclass(p, md, "ChunkStorageMetadata", [&] {
            p.short_binunicode("offsets").memoize();
            torch_size(p, c.offsets);
            p.short_binunicode("sizes").memoize();
            torch_size(p, c.sizes);
          });
        }
        p.op('e');
      });
    }
    for (const auto& o : objects) {
      // A dataclass with an empty __dict__ pickles without BUILD.
      text(o.name).memoize();
      p.stack_global(md, "BytesStorageMetadata").op(')').op(0x81).memoize();
    }
    p.op('u');
    p.short_binunicode("planner_data").memoize().none();
    p.short_binunicode("storage_data").memoize();
    p.op('}').memoize().mark();
    auto storage = [&](const std::string& fqn, const std::vector<int64_t>* offset, int index,
                       const std::string& file, uint64_t at, uint64_t length) {
      dataclass(p, md, "MetadataIndex", [&] {
        p.short_binunicode("fqn").memoize();
        text(fqn).memoize();
        // MetadataIndex.__init__ leaves `offset` unset when it is None, so it is absent from __dict__.
        if (offset) {
          p.short_binunicode("offset").memoize();
          torch_size(p, *offset);
        }
        p.short_binunicode("index").memoize();
        if (index >= 0)
          p.binint1(uint8_t(index));
        else
          p.none();
      });
      dataclass(p, "torch.distributed.checkpoint.filesystem", "_StorageInfo", [&] {
        p.short_binunicode("relative_path").memoize();
        text(file).memoize();
        p.short_binunicode("offset").memoize().long1(int64_t(at));
        p.short_binunicode("length").memoize().binint(int32_t(length));
      });
    };
    for (const auto& t : tensors)
      for (size_t i = 0; i < t.chunks.size(); ++i)
        storage(t.name, &t.chunks[i].offsets, int(i), t.chunks[i].file, t.chunks[i].at, t.chunks[i].length);
    for (const auto& o : objects) storage(o.name, nullptr, -1, o.file, o.at, o.length);
    p.op('u');
    if (new_torch) {
      p.short_binunicode("storage_meta").memoize();
      dataclass(p, md, "StorageMeta", [&] {
        p.short_binunicode("checkpoint_id").memoize();
        p.stack_global("pathlib", "PosixPath").mark().short_binunicode("/ckpt").memoize().op('t').memoize();
        p.op('R').memoize();
        p.short_binunicode("save_id").memoize().short_binunicode("5e1f").memoize();
        p.short_binunicode("load_id").memoize().none();
        p.short_binunicode("modules").memoize().op(']').memoize();
      });
      p.short_binunicode("version").memoize().short_binunicode("1.0.0").memoize();
    }
  });
  p.stop();
  p.frame_after_proto();
  return p.bytes;
}

std::string f32_bytes(const std::vector<float>& values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

std::string bf16_bytes(const std::vector<float>& values) {
  std::string out;
  for (float v : values) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v, 4);
    out += char((bits >> 16) & 0xff);
    out += char((bits >> 24) & 0xff);
  }
  return out;
}

}  // namespace mugv::test
