#pragma once
// The pickle inside a torch.save zip checkpoint (<archive>/data.pkl), read and written without
// Python or LibTorch. Format reference: CPython Lib/pickletools.py (opcodes, protocols 2-5) and
// torch/serialization.py (_save / _load: tensors reduce to torch._utils._rebuild_tensor_v2 over
// storages named by persistent ids ('storage', torch.<Type>Storage, key, location, numel)).
//
// parse_torch_pickle() runs a small stack machine over just the opcodes torch.save emits and
// builds plain values; it never imports or calls anything. The only globals it accepts are
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter, the
// torch.<Type>Storage classes (torch/storage.py _dtype_to_storage_type_map) and, for the dtypes that have
// none (float8: torch/storage.py _new_dtypes), torch._utils._rebuild_tensor_v3 over a torch.UntypedStorage
// (numel in bytes) with the dtype as torch.<name>; any other global or opcode is Error(unsupported) naming
// it and its byte offset. The result must be a state dict: a dict
// whose tensor values are the weights (non-tensor values such as an epoch count are ignored), or
// a dict holding one such dict under "state_dict", "model" or "module" (nested up to 3 deep).
// Malformed pickles (stack underflow, wrong argument types, a truncated stream) are
// Error(format); no tensors at all is Error(format) listing the top-level keys. Errors name
// `subject` (the checkpoint file) and say "data.pkl byte N".
//
// write_torch_pickle() emits the layout torch.save produces for a state dict (protocol 2, an
// OrderedDict, one _rebuild_tensor_v2 per tensor, _rebuild_tensor_v3 over an untyped storage for float8,
// memoized globals), so torch.load reads it.
// Both functions are pure and thread-safe.

#include "core/safetensors.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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

// torch's names for dtypes, the one table of them (core and interop readers and writers alike):
// "FloatStorage" for f32 and so on: the typed storage class torch.save names; nullptr for a dtype torch saves
// through an untyped storage (float8) or does not have.
const char* torch_storage_class(DType dtype);
std::optional<DType> dtype_of_torch_storage_class(std::string_view name);
// torch's spelling of a dtype, "float32", "bfloat16", ... (the name torch.<name> pickles as); nullptr for
// unknown. dtype_from_torch_name() also accepts the aliases "float", "double", "half", "long", "int",
// "short".
const char* torch_dtype_name(DType dtype);
std::optional<DType> dtype_from_torch_name(std::string_view name);

}  // namespace mugv
