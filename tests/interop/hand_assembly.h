#pragma once
// Byte-level assembly of the formats the interop tests read, from their documentation alone and
// independent of the library's writers: pickle opcodes (CPython Lib/pickletools.py), zip records as torch
// writes them (PKWARE APPNOTE 4.3; local headers with a data descriptor, flag bit 3, as miniz does for
// torch.save), torch.save archives and torch.distributed.checkpoint .metadata pickles (the dataclasses of
// torch/distributed/checkpoint/metadata.py as Python's pickler writes them).

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mugv::test {

// A pickle stream assembled opcode by opcode. Memo indices are counted as the unpickler counts them.
class PickleBytes {
 public:
  std::string bytes;

  PickleBytes& op(uint8_t code);
  PickleBytes& proto(int version);
  PickleBytes& mark() { return op('('); }
  PickleBytes& stop() { return op('.'); }
  PickleBytes& none() { return op('N'); }
  PickleBytes& boolean(bool v) { return op(v ? 0x88 : 0x89); }
  PickleBytes& binint1(uint8_t v);
  PickleBytes& binint2(uint16_t v);
  PickleBytes& binint(int32_t v);
  PickleBytes& long1(int64_t v);  // 8-byte two's complement operand
  PickleBytes& binfloat(double v);
  PickleBytes& binunicode(const std::string& s);                            // 'X'
  PickleBytes& short_binunicode(const std::string& s);                      // 0x8c
  PickleBytes& short_binbytes(const std::string& s);                        // 'C'
  PickleBytes& global(const std::string& module, const std::string& name);  // 'c' (protocol 2)
  // Protocol 4: SHORT_BINUNICODE module, MEMOIZE, name, MEMOIZE, STACK_GLOBAL, MEMOIZE, as Python writes a
  // class the first time; BINGET of the memoized class after.
  PickleBytes& stack_global(const std::string& module, const std::string& name);
  PickleBytes& binput(uint8_t index);  // protocol 2 memo
  PickleBytes& binget(uint8_t index);
  PickleBytes& memoize();  // protocol 4 memo: the next index
  int next_memo() const { return memo_; }
  // Prefixes a FRAME opcode covering everything after it (call once, after PROTO, at the end).
  void frame_after_proto();

 private:
  int memo_ = 0;
  std::map<std::string, int> globals_;
};

struct ZipRecord {
  std::string name;
  std::string data;
};
// A stored zip as torch.save writes one: local headers with zero CRC and sizes and a data descriptor after
// each entry's data, torch's "FB" padding so every entry's data starts 64-byte aligned, and the zip64 end
// record and locator before the classic end record.
std::string torch_style_zip(const std::vector<ZipRecord>& records);

// torch.save(tensor) of `shape` viewing `storage_elements` elements of storage class `storage_class`
// (FloatStorage, BFloat16Storage, ...) at `offset` with `stride`: data.pkl in the protocol-2 form torch
// writes (GLOBAL, BINPUT, BINPERSID, ...), data/0, version, byteorder.
std::string hand_tensor_archive(const std::string& storage_class, const std::string& storage_bytes,
                                int64_t storage_elements, int64_t offset, const std::vector<int64_t>& shape,
                                const std::vector<int64_t>& stride, const std::string& archive = "archive");

// One tensor and its chunks for hand_dcp_metadata().
struct HandChunk {
  std::vector<int64_t> offsets, sizes;
  std::string file;
  uint64_t at = 0, length = 0;
};
struct HandTensor {
  std::string name;
  std::string dtype;  // torch's name: "float32", "bfloat16"
  std::vector<int64_t> shape;
  std::vector<HandChunk> chunks;
};
struct HandObject {
  std::string name, file;
  uint64_t at = 0, length = 0;
};
// pickle.dump(Metadata(...), protocol 4) as Python writes it for torch <= 2.3 (TensorProperties from
// torch.distributed._shard.sharded_tensor.metadata, its 5-tuple state with MEM_FORMAT_ENCODING), or for
// torch 2.4+ (`new_torch`: TensorProperties and _MEM_FORMAT_ENCODING from
// torch.distributed.checkpoint.metadata, plus storage_meta and version fields).
std::string hand_dcp_metadata(const std::vector<HandTensor>& tensors, const std::vector<HandObject>& objects,
                              bool new_torch = false);

std::string f32_bytes(const std::vector<float>& values);
std::string bf16_bytes(const std::vector<float>& values);  // truncated bf16, exact for the values tests use

}  // namespace mugv::test
