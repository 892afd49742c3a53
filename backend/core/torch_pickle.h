#pragma once
// The pickle inside a torch.save zip checkpoint (<archive>/data.pkl), read and written without
// Python or LibTorch. Format reference: CPython Lib/pickletools.py (opcodes, protocols 2-5) and
// torch/serialization.py (_save / _load: tensors reduce to torch._utils._rebuild_tensor_v2 over
// storages named by persistent ids ('storage', torch.<Type>Storage, key, location, numel)).
//
// parse_torch_pickle() runs a small stack machine over just the opcodes torch.save emits and
// builds plain values; it never imports or calls anything. The only globals it accepts are
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the
// torch.<Type>Storage classes of the dtypes in core/safetensors.h; any other global or opcode is
// Error(unsupported) naming it and its byte offset. The result must be a state dict: a dict
// whose tensor values are the weights (non-tensor values such as an epoch count are ignored), or
// a dict holding one such dict under "state_dict", "model" or "module" (nested up to 3 deep).
// Malformed pickles (stack underflow, wrong argument types, a truncated stream) are
// Error(format); no tensors at all is Error(format) listing the top-level keys. Errors name
// `subject` (the checkpoint file) and say "data.pkl byte N".
//
// write_torch_pickle() emits the layout torch.save produces for a state dict (protocol 2, an
// OrderedDict, one _rebuild_tensor_v2 per tensor, memoized globals), so torch.load reads it.
// Both functions are pure and thread-safe.

#include "core/safetensors.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mugv {

struct TorchTensorRecord {
  std::string name;
  DType dtype = DType::unknown;
  std::string storage_key;     // the storage's bytes are <archive>/data/<storage_key>
  uint64_t storage_numel = 0;  // elements the storage declares
  std::string storage_location = "cpu";
  int64_t storage_offset = 0;   // elements
  std::vector<int64_t> shape;   // empty = scalar
  std::vector<int64_t> stride;  // elements, one per dimension
};

// Tensors in the pickle's dict order.
[[nodiscard]] std::vector<TorchTensorRecord> parse_torch_pickle(const uint8_t* data, size_t bytes,
                                                                const std::string& subject);
[[nodiscard]] std::string write_torch_pickle(const std::vector<TorchTensorRecord>& tensors);

// "FloatStorage" for f32 and so on: the torch class the pickle names; nullptr for unknown.
const char* torch_storage_class(DType dtype);

}  // namespace mugv
