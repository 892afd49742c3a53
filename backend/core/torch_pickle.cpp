#include "core/torch_pickle.h"

#include "core/error.h"
#include "core/pickle_opcodes.h"
#include "core/strings.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>

namespace mugv {
namespace {

// The typed storage classes torch.save names (torch/storage.py _dtype_to_storage_type_map). Dtypes absent
// here are saved as torch.UntypedStorage with _rebuild_tensor_v3 (torch/storage.py _new_dtypes).
constexpr std::array<std::pair<DType, const char*>, 10> kStorageClasses{{
    {DType::f64, "DoubleStorage"},
    {DType::f32, "FloatStorage"},
    {DType::f16, "HalfStorage"},
    {DType::bf16, "BFloat16Storage"},
    {DType::i64, "LongStorage"},
    {DType::i32, "IntStorage"},
    {DType::i16, "ShortStorage"},
    {DType::i8, "CharStorage"},
    {DType::u8, "ByteStorage"},
    {DType::boolean, "BoolStorage"},
}};

// torch's names first (what torch.save writes), then the aliases torch also accepts as attributes.
constexpr std::array<std::pair<DType, const char*>, 18> kTorchDTypes{{
    {DType::f32, "float32"},
    {DType::f64, "float64"},
    {DType::f16, "float16"},
    {DType::bf16, "bfloat16"},
    {DType::i64, "int64"},
    {DType::i32, "int32"},
    {DType::i16, "int16"},
    {DType::i8, "int8"},
    {DType::u8, "uint8"},
    {DType::boolean, "bool"},
    {DType::f8_e4m3, "float8_e4m3fn"},
    {DType::f8_e5m2, "float8_e5m2"},
    {DType::f32, "float"},
    {DType::f64, "double"},
    {DType::f16, "half"},
    {DType::i64, "long"},
    {DType::i32, "int"},
    {DType::i16, "short"},
}};

// The first name a table gives `dtype` (nullptr when none), and the dtype a table gives `name`.
template <size_t N>
const char* name_of(const std::array<std::pair<DType, const char*>, N>& table, DType dtype) {
  for (const auto& [d, name] : table)
    if (d == dtype) return name;
  return nullptr;
}
template <size_t N>
std::optional<DType> dtype_named(const std::array<std::pair<DType, const char*>, N>& table,
                                 std::string_view name) {
  for (const auto& [d, n] : table)
    if (name == n) return d;
  return std::nullopt;
}

using namespace pickle_op;  // opcode names (core/pickle_opcodes.h)

enum class Callable {
  none,
  ordered_dict,
  rebuild_tensor_v2,
  rebuild_tensor_v3,
  rebuild_parameter,
  storage_class,
  untyped_storage,
  dtype
};

struct Node {
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;  // also a storage's numel
  double floating = 0;
  std::string text;                              // a string; a global's "module.name"; a storage's key
  std::vector<Node*> items;                      // tuple, list
  std::vector<std::pair<Node*, Node*>> entries;  // dict, in insertion order
  std::map<std::string, size_t> string_keys;     // dict: where each string key is in `entries`
  Callable callable = Callable::none;
  DType dtype = DType::unknown;  // storage class or dtype global, storage (unknown: untyped)
  std::string location;          // storage
  TorchTensorRecord tensor;
};

const char* kind_name(const Node* node) {
  switch (node->kind) {
    case Node::Kind::none:
      return "None";
    case Node::Kind::boolean:
      return "bool";
    case Node::Kind::integer:
      return "int";
    case Node::Kind::floating:
      return "float";
    case Node::Kind::string:
      return "str";
    case Node::Kind::tuple:
      return "tuple";
    case Node::Kind::list:
      return "list";
    case Node::Kind::dict:
      return "dict";
    case Node::Kind::global:
      return "global";
    case Node::Kind::storage:
      return "storage";
    case Node::Kind::tensor:
      return "tensor";
  }
  return "?";
}

// Nodes live in an arena owned by the machine: a pickle may build reference cycles through the
// memo, which shared ownership would leak.
class Machine {
 public:
  Machine(const uint8_t* data, size_t bytes, const std::string& subject)
      : data_(data), bytes_(bytes), subject_(subject) {}

  Node* run() {
    while (true) {
      if (pos_ >= bytes_) {
        op_pos_ = pos_;
        throw malformed("the pickle ends without STOP (truncated?)");
      }
      op_pos_ = pos_;
      const uint8_t op = data_[pos_++];
      switch (op) {
        case PROTO: {
          uint8_t protocol = take(1)[0];
          if (protocol > 5) throw unsupported(cat("pickle protocol ", int(protocol)));
          break;
        }
        case FRAME:
          take(8);
          break;  // frames only group opcodes; the stream reads the same without them
        case GLOBAL: {
          std::string module = line();
          std::string name = line();
          push(global(module, name));
          break;
        }
        case STACK_GLOBAL: {
          Node* name = pop();
          Node* module = pop();
          if (name->kind != Node::Kind::string || module->kind != Node::Kind::string)
            throw malformed("STACK_GLOBAL needs two strings");
          push(global(module->text, name->text));
          break;
        }
        case BINUNICODE:
          push(string(u32()));
          break;
        case SHORT_BINUNICODE:
          push(string(take(1)[0]));
          break;
        case BINSTRING: {
          int32_t n = static_cast<int32_t>(u32());
          if (n < 0) throw malformed("negative BINSTRING length");
          push(string(static_cast<size_t>(n)));
          break;
        }
        case SHORT_BINSTRING:
          push(string(take(1)[0]));
          break;
        case BININT:
          push(integer(static_cast<int32_t>(u32())));
          break;
        case BININT1:
          push(integer(take(1)[0]));
          break;
        case BININT2: {
          const uint8_t* p = take(2);
          push(integer(p[0] | (p[1] << 8)));
          break;
        }
        case LONG1:
          push(integer(long1()));
          break;
        case BINFLOAT: {
          const uint8_t* p = take(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian, unlike everything else
          Node* n = make(Node::Kind::floating);
          std::memcpy(&n->floating, &bits, sizeof bits);
          push(n);
          break;
        }
        case NONE:
          push(make(Node::Kind::none));
          break;
        case NEWTRUE:
        case NEWFALSE: {
          Node* n = make(Node::Kind::boolean);
          n->boolean = op == NEWTRUE;
          push(n);
          break;
        }
        case EMPTY_DICT:
          push(make(Node::Kind::dict));
          break;
        case EMPTY_LIST:
          push(make(Node::Kind::list));
          break;
        case EMPTY_TUPLE:
          push(make(Node::Kind::tuple));
          break;
        case MARK:
          marks_.push_back(stack_.size());
          break;
        case TUPLE:
          push(sequence(Node::Kind::tuple, pop_mark()));
          break;
        case TUPLE1:
        case TUPLE2:
        case TUPLE3: {
          size_t n = op - TUPLE1 + 1;
          if (stack_.size() < n) throw malformed("stack underflow");
          std::vector<Node*> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(sequence(Node::Kind::tuple, std::move(items)));
          break;
        }
        case LIST:
          push(sequence(Node::Kind::list, pop_mark()));
          break;
        case DICT: {
          Node* dict = make(Node::Kind::dict);
          set_items(dict, pop_mark());
          push(dict);
          break;
        }
        case SETITEM: {
          Node* value = pop();
          Node* key = pop();
          set_items(top(Node::Kind::dict, "SETITEM"), {key, value});
          break;
        }
        case SETITEMS: {
          std::vector<Node*> items = pop_mark();
          set_items(top(Node::Kind::dict, "SETITEMS"), items);
          break;
        }
        case APPEND: {
          Node* value = pop();
          top(Node::Kind::list, "APPEND")->items.push_back(value);
          break;
        }
        case APPENDS: {
          std::vector<Node*> items = pop_mark();
          Node* list = top(Node::Kind::list, "APPENDS");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case BINPUT:
          memo_[take(1)[0]] = top();
          break;
        case LONG_BINPUT:
          memo_[u32()] = top();
          break;
        case MEMOIZE: {
          uint64_t index = memo_.size();
          memo_[index] = top();
          break;
        }
        case BINGET:
          push(memo_get(take(1)[0]));
          break;
        case LONG_BINGET:
          push(memo_get(u32()));
          break;
        case REDUCE: {
          Node* args = pop();
          Node* callable = pop();
          push(reduce(callable, args));
          break;
        }
        case NEWOBJ: {
          Node* args = pop();
          Node* cls = pop();
          if (cls->kind != Node::Kind::global || cls->callable != Callable::ordered_dict)
            throw unsupported(
                cat("NEWOBJ of ", cls->kind == Node::Kind::global ? cls->text : kind_name(cls)));
          push(reduce(cls, args));
          break;
        }
        case BUILD: {
          pop();  // state: attributes such as an OrderedDict's _metadata, which carry no weights
          Node* object = top();
          if (object->kind != Node::Kind::dict && object->kind != Node::Kind::tensor)
            throw unsupported(cat("BUILD on a ", kind_name(object)));
          break;
        }
        case BINPERSID:
          push(storage(pop()));
          break;
        case STOP:
          return pop();
        default: {
          std::string shown = op >= 0x20 && op < 0x7f ? cat(" ('", static_cast<char>(op), "')") : "";
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          throw unsupported(cat("pickle opcode ", hex, shown,
                                " is not one torch.save emits for a state dict (nothing is executed)"));
        }
      }
    }
  }

  Error malformed(const std::string& message) const {
    return Error(ErrorCode::format, subject_,
                 cat("data.pkl byte ", op_pos_, ": malformed pickle: ", message));
  }
  Error unsupported(const std::string& message) const {
    return Error(ErrorCode::unsupported, subject_, cat("data.pkl byte ", op_pos_, ": unsupported ", message));
  }

 private:
  Node* make(Node::Kind kind) {
    arena_.push_back(std::make_unique<Node>());
    arena_.back()->kind = kind;
    return arena_.back().get();
  }
  const uint8_t* take(size_t n) {
    if (n > bytes_ - pos_) throw malformed(cat("needs ", n, " more bytes but the pickle ends (truncated?)"));
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint32_t u32() {
    const uint8_t* p = take(4);
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  int64_t long1() {
    const size_t n = take(1)[0];
    if (n > 8) throw unsupported(cat("integer of ", n, " bytes (wider than 64 bits)"));
    const uint8_t* p = take(n);
    if (n == 0) return 0;
    uint64_t value = 0;
    for (size_t i = 0; i < n; ++i) value |= uint64_t(p[i]) << (8 * i);
    if (n < 8 && (p[n - 1] & 0x80)) value |= ~uint64_t(0) << (8 * n);  // sign-extend
    return static_cast<int64_t>(value);
  }
  std::string line() {
    const void* end = std::memchr(data_ + pos_, '\n', bytes_ - pos_);
    if (!end) throw malformed("GLOBAL without a newline (truncated?)");
    size_t n = static_cast<size_t>(static_cast<const uint8_t*>(end) - (data_ + pos_));
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return out;
  }
  Node* string(size_t n) {
    const uint8_t* p = take(n);
    Node* node = make(Node::Kind::string);
    node->text.assign(reinterpret_cast<const char*>(p), n);
    return node;
  }
  Node* integer(int64_t v) {
    Node* node = make(Node::Kind::integer);
    node->integer = v;
    return node;
  }
  Node* sequence(Node::Kind kind, std::vector<Node*> items) {
    Node* node = make(kind);
    node->items = std::move(items);
    return node;
  }
  void push(Node* node) { stack_.push_back(node); }
  Node* pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      throw malformed("stack underflow");
    Node* node = stack_.back();
    stack_.pop_back();
    return node;
  }
  Node* top() {
    if (stack_.empty()) throw malformed("stack underflow");
    return stack_.back();
  }
  Node* top(Node::Kind kind, const char* op) {
    Node* node = top();
    if (node->kind != kind) throw malformed(cat(op, " on a ", kind_name(node)));
    return node;
  }
  std::vector<Node*> pop_mark() {
    if (marks_.empty()) throw malformed("no MARK to pop to");
    size_t mark = marks_.back();
    marks_.pop_back();
    if (mark > stack_.size()) throw malformed("stack underflow below MARK");
    std::vector<Node*> items(stack_.begin() + static_cast<ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  Node* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) throw malformed(cat("memo slot ", index, " read before it was written"));
    return it->second;
  }
  void set_items(Node* dict, const std::vector<Node*>& items) {
    if (items.size() % 2) throw malformed("odd number of items for a dict");
    for (size_t i = 0; i < items.size(); i += 2) {
      Node* key = items[i];
      if (key->kind == Node::Kind::string) {
        auto [it, inserted] = dict->string_keys.emplace(key->text, dict->entries.size());
        if (!inserted) {
          dict->entries[it->second].second = items[i + 1];
          continue;
        }
      }
      dict->entries.emplace_back(key, items[i + 1]);
    }
  }

  Node* global(const std::string& module, const std::string& name) {
    Node* node = make(Node::Kind::global);
    node->text = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      node->callable = Callable::ordered_dict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      node->callable = Callable::rebuild_tensor_v2;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v3") {
      node->callable = Callable::rebuild_tensor_v3;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      node->callable = Callable::rebuild_parameter;
    } else if (module == "torch" && name == "UntypedStorage") {
      node->callable = Callable::untyped_storage;
    } else if (module == "torch") {
      if (const auto dtype = dtype_of_torch_storage_class(name)) {
        node->callable = Callable::storage_class;
        node->dtype = *dtype;
      } else if (const auto named = dtype_from_torch_name(name)) {
        node->callable = Callable::dtype;
        node->dtype = *named;
      }
    }
    if (node->callable == Callable::none)
      throw unsupported(
          cat("global '", node->text,
              "': not part of a torch.save state dict of tensors (nothing is imported or run)"));
    return node;
  }

  static bool ints(const Node* tuple, std::vector<int64_t>& out) {
    if (tuple->kind != Node::Kind::tuple) return false;
    out.clear();
    for (const Node* item : tuple->items) {
      if (item->kind != Node::Kind::integer) return false;
      out.push_back(item->integer);
    }
    return true;
  }

  Node* reduce(Node* callable, Node* args) {
    if (callable->kind != Node::Kind::global) throw malformed(cat("REDUCE of a ", kind_name(callable)));
    if (args->kind != Node::Kind::tuple) throw malformed(cat("REDUCE arguments are a ", kind_name(args)));
    const std::vector<Node*>& a = args->items;
    switch (callable->callable) {
      case Callable::ordered_dict: {
        Node* dict = make(Node::Kind::dict);
        if (a.empty()) return dict;
        if (a.size() == 1 && a[0]->kind == Node::Kind::list) {
          for (Node* pair : a[0]->items) {
            if (pair->kind != Node::Kind::tuple || pair->items.size() != 2)
              throw malformed("OrderedDict items are not (key, value) pairs");
            set_items(dict, pair->items);
          }
          return dict;
        }
        throw malformed("OrderedDict arguments are neither empty nor a list of pairs");
      }
      case Callable::rebuild_tensor_v2: {
        Node* t = make(Node::Kind::tensor);
        if ((a.size() != 6 && a.size() != 7) || a[0]->kind != Node::Kind::storage ||
            a[0]->dtype == DType::unknown || a[1]->kind != Node::Kind::integer ||
            !ints(a[2], t->tensor.shape) || !ints(a[3], t->tensor.stride) ||
            t->tensor.shape.size() != t->tensor.stride.size())
          throw malformed(
              "_rebuild_tensor_v2 expects (typed storage, offset, size tuple, stride tuple of the same "
              "length, "
              "requires_grad, hooks[, metadata])");
        t->tensor.dtype = a[0]->dtype;
        t->tensor.storage_numel = static_cast<uint64_t>(a[0]->integer);
        fill_view(t->tensor, a[0], a[1]);
        return t;
      }
      case Callable::rebuild_tensor_v3: {
        // The form torch.save uses for dtypes without a typed storage: an untyped storage whose numel counts
        // bytes, and the dtype as its own argument.
        Node* t = make(Node::Kind::tensor);
        if ((a.size() != 7 && a.size() != 8) || a[0]->kind != Node::Kind::storage ||
            a[0]->dtype != DType::unknown || a[1]->kind != Node::Kind::integer ||
            !ints(a[2], t->tensor.shape) || !ints(a[3], t->tensor.stride) ||
            t->tensor.shape.size() != t->tensor.stride.size() || a[6]->kind != Node::Kind::global ||
            a[6]->callable != Callable::dtype)
          throw malformed(
              "_rebuild_tensor_v3 expects (untyped storage, offset, size tuple, stride tuple of the same "
              "length, "
              "requires_grad, hooks, dtype[, metadata])");
        const uint64_t element_bytes = dtype_size_bytes(a[6]->dtype);
        if (uint64_t(a[0]->integer) % element_bytes != 0)
          throw malformed(cat("an untyped storage of ", a[0]->integer, " bytes holds no whole number of ",
                              to_string(a[6]->dtype), " elements"));
        t->tensor.dtype = a[6]->dtype;
        t->tensor.storage_numel = uint64_t(a[0]->integer) / element_bytes;
        fill_view(t->tensor, a[0], a[1]);
        return t;
      }
      case Callable::rebuild_parameter:
        if (a.empty() || a[0]->kind != Node::Kind::tensor)
          throw malformed("_rebuild_parameter expects (tensor, requires_grad, hooks)");
        return a[0];
      case Callable::storage_class:
      case Callable::untyped_storage:
      case Callable::dtype:
      case Callable::none:
        break;
    }
    throw unsupported(cat("call of '", callable->text, "'"));
  }

  // The storage's key and location and the view's offset (the dtype and element count are set by the caller).
  static void fill_view(TorchTensorRecord& tensor, const Node* storage, const Node* offset) {
    tensor.storage_key = storage->text;
    tensor.storage_location = storage->location;
    tensor.storage_offset = offset->integer;
  }

  Node* storage(Node* pid) {
    if (pid->kind != Node::Kind::tuple || pid->items.empty() || pid->items[0]->kind != Node::Kind::string)
      throw malformed(cat("persistent id is a ", kind_name(pid), ", not a tuple naming its kind"));
    const std::vector<Node*>& a = pid->items;
    if (a[0]->text != "storage") throw unsupported(cat("persistent id of kind '", a[0]->text, "'"));
    if (a.size() != 5 || a[1]->kind != Node::Kind::global ||
        (a[1]->callable != Callable::storage_class && a[1]->callable != Callable::untyped_storage) ||
        a[2]->kind != Node::Kind::string || a[3]->kind != Node::Kind::string ||
        a[4]->kind != Node::Kind::integer || a[4]->integer < 0)
      throw malformed(
          "a storage persistent id is ('storage', torch.<Type>Storage or torch.UntypedStorage, key, "
          "location, "
          "numel)");
    Node* node = make(Node::Kind::storage);
    node->dtype = a[1]->dtype;
    node->text = a[2]->text;
    node->location = a[3]->text;
    node->integer = a[4]->integer;
    return node;
  }

  const uint8_t* data_;
  size_t bytes_;
  const std::string& subject_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<std::unique_ptr<Node>> arena_;
  std::vector<Node*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Node*> memo_;
};

bool has_tensors(const Node* dict) {
  for (const auto& [key, value] : dict->entries)
    if (value->kind == Node::Kind::tensor) return true;
  return false;
}

const Node* lookup(const Node* dict, const std::string& key) {
  auto it = dict->string_keys.find(key);
  return it == dict->string_keys.end() ? nullptr : dict->entries[it->second].second;
}

// The dict whose tensors are the weights: this one, or the single one nested under a
// conventional key (training scripts save {"model": ..., "optimizer": ..., "epoch": ...}).
const Node* find_state_dict(const Node* dict, int depth, const std::string& path,
                            const std::string& subject) {
  if (has_tensors(dict)) return dict;
  if (depth == 3) return nullptr;
  std::vector<std::pair<std::string, const Node*>> found;
  for (const char* key : {"state_dict", "model", "module"}) {
    const Node* value = lookup(dict, key);
    if (!value || value->kind != Node::Kind::dict) continue;
    std::string inner = path + "['" + key + "']";
    if (const Node* sd = find_state_dict(value, depth + 1, inner, subject)) found.emplace_back(inner, sd);
  }
  if (found.size() > 1)
    throw Error(ErrorCode::unsupported, subject,
                "data.pkl holds state dicts at both " + found[0].first + " and " + found[1].first +
                    "; save the one to load on its own");
  return found.empty() ? nullptr : found[0].second;
}

}  // namespace

const char* torch_storage_class(DType dtype) {
  return name_of(kStorageClasses, dtype);
}

std::optional<DType> dtype_of_torch_storage_class(std::string_view name) {
  return dtype_named(kStorageClasses, name);
}

const char* torch_dtype_name(DType dtype) {
  return name_of(kTorchDTypes, dtype);
}

std::optional<DType> dtype_from_torch_name(std::string_view name) {
  return dtype_named(kTorchDTypes, name);
}

std::vector<TorchTensorRecord> parse_torch_pickle(const uint8_t* data, size_t bytes,
                                                  const std::string& subject) {
  Machine machine(data, bytes, subject);
  const Node* root = machine.run();
  if (root->kind != Node::Kind::dict)
    throw Error(ErrorCode::format, subject,
                cat("data.pkl holds a ", kind_name(root), ", not a dict of tensors"));
  const Node* state = find_state_dict(root, 0, "", subject);
  if (!state) {
    std::string keys;
    size_t listed = 0;
    for (const auto& [key, value] : root->entries) {
      if (key->kind != Node::Kind::string) continue;
      if (listed++ == 10) {
        keys += ", ...";
        break;
      }
      keys += (keys.empty() ? "'" : ", '") + key->text + "' (" + kind_name(value) + ")";
    }
    throw Error(ErrorCode::format, subject,
                "data.pkl holds no tensors (nor a state dict under 'state_dict', 'model' or 'module'); "
                "top-level keys: " +
                    (keys.empty() ? std::string("none") : keys));
  }
  std::vector<TorchTensorRecord> out;
  for (const auto& [key, value] : state->entries) {
    if (value->kind != Node::Kind::tensor) continue;
    if (key->kind != Node::Kind::string)
      throw Error(ErrorCode::format, subject, cat("data.pkl has a tensor under a ", kind_name(key), " key"));
    out.push_back(value->tensor);
    out.back().name = key->text;
  }
  return out;
}

// ---- writer ----

namespace {

class Emitter {
 public:
  std::string out;

  void op(uint8_t code) { out += static_cast<char>(code); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void string(const std::string& text) {
    op(BINUNICODE);
    u32(static_cast<uint32_t>(text.size()));
    out += text;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op(BININT1);
      op(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 65536) {
      op(BININT2);
      op(static_cast<uint8_t>(v & 0xff));
      op(static_cast<uint8_t>(v >> 8));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op(BININT);
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      // Minimal little-endian two's complement, as pickle's encode_long.
      uint8_t b[8];
      for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff);
      size_t n = 8;
      while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
        --n;
      op(LONG1);
      op(static_cast<uint8_t>(n));
      out.append(reinterpret_cast<const char*>(b), n);
    }
  }
  void tuple(const std::vector<int64_t>& values) {
    if (values.empty()) return op(EMPTY_TUPLE);
    if (values.size() > 3) op(MARK);
    for (int64_t v : values) integer(v);
    op(values.size() == 1 ? TUPLE1 : values.size() == 2 ? TUPLE2 : values.size() == 3 ? TUPLE3 : TUPLE);
  }
  // Each global is written once and fetched from the memo afterwards, as pickle does.
  void global(const std::string& module, const std::string& name) {
    const std::string key = module + "\n" + name + "\n";
    auto it = memo_.find(key);
    if (it != memo_.end()) {
      if (it->second < 256) {
        op(BINGET);
        op(static_cast<uint8_t>(it->second));
      } else {
        op(LONG_BINGET);
        u32(it->second);
      }
      return;
    }
    op(GLOBAL);
    out += key;
    uint32_t index = static_cast<uint32_t>(memo_.size());
    memo_.emplace(key, index);
    if (index < 256) {
      op(BINPUT);
      op(static_cast<uint8_t>(index));
    } else {
      op(LONG_BINPUT);
      u32(index);
    }
  }

 private:
  std::map<std::string, uint32_t> memo_;
};

}  // namespace

std::string write_torch_pickle(const std::vector<TorchTensorRecord>& tensors) {
  Emitter e;
  e.op(PROTO);
  e.op(2);
  e.global("collections", "OrderedDict");
  e.op(EMPTY_TUPLE);
  e.op(REDUCE);
  constexpr size_t kBatch = 1000;  // pickle's batch size for SETITEMS
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TorchTensorRecord& t = tensors[i];
    // A typed storage and _rebuild_tensor_v2 where torch has the class, else (float8) an untyped storage
    // counted in bytes and _rebuild_tensor_v3 naming the dtype, as torch.save writes them.
    const char* cls = torch_storage_class(t.dtype);
    const char* dtype_name = torch_dtype_name(t.dtype);
    if (!dtype_name) throw Error(ErrorCode::invalid_argument, t.name, "tensor has an unknown dtype");
    if (i % kBatch == 0) e.op(MARK);
    e.string(t.name);
    e.global("torch._utils", cls ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    e.op(MARK);
    e.op(MARK);
    e.string("storage");
    e.global("torch", cls ? cls : "UntypedStorage");
    e.string(t.storage_key);
    e.string(t.storage_location);
    e.integer(static_cast<int64_t>(cls ? t.storage_numel : t.storage_numel * dtype_size_bytes(t.dtype)));
    e.op(TUPLE);
    e.op(BINPERSID);
    e.integer(t.storage_offset);
    e.tuple(t.shape);
    e.tuple(t.stride);
    e.op(NEWFALSE);
    e.global("collections", "OrderedDict");  // backward hooks: always empty in a saved state dict
    e.op(EMPTY_TUPLE);
    e.op(REDUCE);
    if (!cls) e.global("torch", dtype_name);
    e.op(TUPLE);
    e.op(REDUCE);
    if (i % kBatch == kBatch - 1 || i + 1 == tensors.size()) e.op(SETITEMS);
  }
  e.op(STOP);
  return e.out;
}

}  // namespace mugv
