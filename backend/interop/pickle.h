#pragma once
// Python pickles as a plain value tree, read and written without Python: torch.save's data.pkl (protocol 2)
// and torch.distributed.checkpoint's `.metadata` (pickle.dump of dataclasses: protocol 4, 5 from Python
// 3.14). Opcode reference: CPython Lib/pickletools.py; protocol 4 framing and STACK_GLOBAL: PEP 3154.
//
// parse_pickle() runs the pickle machine over the opcodes of protocols 2 to 5 that those writers emit and
// never imports or calls anything:
//   GLOBAL, STACK_GLOBAL        -> a `global` value naming module and name ("torch", "Size")
//   REDUCE, NEWOBJ, NEWOBJ_EX   -> an `object` value: the callable (usually a global) and its arguments
//   BUILD                       -> sets that object's `state` (the __setstate__ / __dict__ argument)
//   APPEND(S), SETITEM(S) on an object (an OrderedDict built by REDUCE) -> the object's items / entries
//   BINPERSID                   -> a `persistent` value holding the persistent id
// Shared references stay shared (the memo), so a BUILD reaches every holder, as in Python. Interpreting
// classes is the caller's job (torch_archive.h, dist_checkpoint.h). Fetching a memoized value copies
// nothing, whatever it is used for (a REDUCE's argument tuple, a dict key set into many dicts), so the
// memory a parse takes grows with the length of the stream, not with how often it reuses values.
// Accepted opcodes: PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE BININT BININT1 BININT2
// LONG1 LONG4 BINFLOAT BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING SHORT_BINSTRING SHORT_BINBYTES
// BINBYTES BINBYTES8 BYTEARRAY8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS
// EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET GLOBAL STACK_GLOBAL REDUCE NEWOBJ NEWOBJ_EX
// BUILD BINPERSID BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET.
// Errors name `subject` and the byte offset of the opcode:
//   Error(unsupported)  an opcode outside that set (protocol 0/1 text opcodes, out-of-band buffers,
//                       extension codes, a protocol above 5), an integer wider than 64 bits
//   Error(format)       a malformed stream: truncated, stack underflow, a missing MARK or memo entry,
//                       an argument of the wrong kind, a STACK_GLOBAL module or name over 1024 bytes,
//                       no STOP; a value that contains itself (a reference cycle through the memo, which
//                       Python can pickle but no checkpoint writer makes, and which shared_ptr values could
//                       never free). Bytes after STOP are ignored (as pickle.loads does).
//
// write_pickle() writes a value tree as Python's pickler would write the same objects: objects by NEWOBJ
// or REDUCE with their state by BUILD; globals by GLOBAL (protocol 2-3) or STACK_GLOBAL (4-5); every
// container and global memoized, and a value reached twice (the same PickleRef) written once and fetched
// from the memo after. Protocol 2 cannot hold bytes or sets (Python writes them through reduce calls that
// this writer does not emulate): Error(invalid_argument). No FRAME opcodes are written (framing is optional
// for readers, PEP 3154).
//
// Values are shared_ptr nodes: build them with the make_* helpers. parse_pickle's result is not shared
// with anything else and has no cycles; treat it as read-only. Both functions are pure and thread-safe.

#include "core/error.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv {

enum class PickleKind {
  none = 0,
  boolean,
  integer,
  floating,
  string,  // str (and protocol 2's BINSTRING)
  bytes,   // bytes, bytearray
  tuple,
  list,
  dict,
  set,
  frozenset,
  global,      // a class or function reference: module, name
  object,      // the result of REDUCE / NEWOBJ: callable(args...), then BUILD(state)
  persistent,  // BINPERSID(pid): resolved by the application (torch.save: storages)
};
const char* to_string(PickleKind kind);

struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;

// An object's arguments: the items of its argument tuple, held through that tuple rather than copied (a
// memoized tuple that many REDUCEs reuse is shared by all of them, as in Python). Read like a const vector.
class PickleArgs {
 public:
  PickleArgs() = default;
  // `tuple` must be a tuple (or null: no arguments); it is shared, so it must not change afterwards.
  explicit PickleArgs(PickleRef tuple) : tuple_(std::move(tuple)) {}

  const std::vector<PickleRef>& items() const;
  size_t size() const { return items().size(); }
  bool empty() const { return items().empty(); }
  const PickleRef& operator[](size_t i) const { return items()[i]; }
  std::vector<PickleRef>::const_iterator begin() const { return items().begin(); }
  std::vector<PickleRef>::const_iterator end() const { return items().end(); }
  // The argument tuple itself; null when there are no arguments.
  const PickleRef& tuple() const { return tuple_; }

 private:
  friend struct PickleValue;
  PickleRef tuple_;
};

// How an object was made.
enum class PickleCall { reduce = 0, newobj, newobj_ex };

struct PickleValue {
  PickleKind kind = PickleKind::none;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0;
  std::string text;                                      // string and bytes contents; a global's module
  std::string name;                                      // a global's (qualified) name
  std::vector<PickleRef> items;                          // tuple, list, set, frozenset; an object's APPENDs
  std::vector<std::pair<PickleRef, PickleRef>> entries;  // dict in insertion order; an object's SETITEMs
  PickleRef callable;                                    // object: what REDUCE / NEWOBJ called
  PickleArgs args;                                       // object: the argument tuple's items
  PickleRef kwargs;                                      // object made by NEWOBJ_EX: its keyword dict
  PickleRef state;                                       // object: BUILD's argument; null when not built
  PickleRef pid;                                         // persistent: the persistent id
  PickleCall call = PickleCall::reduce;

  PickleValue() = default;
  PickleValue(const PickleValue&) = default;
  PickleValue& operator=(const PickleValue&) = default;
  ~PickleValue();

  bool is(PickleKind k) const { return kind == k; }
  // A global named module.name.
  bool is_global(std::string_view module, std::string_view name) const;
  // An object whose callable is a global with this name (any module when `module` is empty).
  bool is_object_of(std::string_view name, std::string_view module = {}) const;
  // "module.name" of a global, or of an object's callable when it is a global; empty otherwise.
  std::string class_name() const;
  // A dict's (or a built object's dict state's) value under a string key; nullptr when absent.
  const PickleValue* find(std::string_view key) const;
  // Short description for messages: "int 3", "str 'cpu'", "tuple of 5", "object torch.Size(...)".
  std::string describe() const;

  // Accessors that check the kind: Error(format) "<what> is <describe()>, not <expected>".
  int64_t as_int(std::string_view what) const;
  bool as_bool(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;
  // The items of a tuple or list.
  const std::vector<PickleRef>& as_sequence(std::string_view what) const;
  // A tuple or list of ints, or an object torch.Size((ints...)) as torch pickles shapes.
  std::vector<int64_t> as_int_list(std::string_view what) const;
};

inline const std::vector<PickleRef>& PickleArgs::items() const {
  static const std::vector<PickleRef> none;
  return tuple_ ? tuple_->items : none;
}

PickleRef make_none();
PickleRef make_bool(bool value);
PickleRef make_int(int64_t value);
PickleRef make_float(double value);
PickleRef make_string(std::string value);
PickleRef make_bytes(std::string value);
PickleRef make_tuple(std::vector<PickleRef> items);
PickleRef make_list(std::vector<PickleRef> items);
PickleRef make_dict(std::vector<std::pair<PickleRef, PickleRef>> entries);
PickleRef make_global(std::string module, std::string name);
// callable(*args) by REDUCE; state (optional) set by BUILD.
PickleRef make_reduce(PickleRef callable, std::vector<PickleRef> args, PickleRef state = nullptr);
// cls.__new__(cls, *args) by NEWOBJ; state (optional) set by BUILD. A dataclass instance is
// make_newobj(make_global(module, Class), {}, make_dict({{make_string("field"), value}, ...})).
PickleRef make_newobj(PickleRef cls, std::vector<PickleRef> args, PickleRef state = nullptr);
PickleRef make_persistent(PickleRef pid);

// The root value of a pickle stream of `bytes` bytes. `subject` names the stream in errors.
[[nodiscard]] PickleRef parse_pickle(const uint8_t* data, size_t bytes, const std::string& subject);
// A pickle stream (PROTO `protocol` ... STOP) for `root`. protocol is 2 to 5; anything else is
// Error(invalid_argument), as is a value tree deeper than 1000 levels.
[[nodiscard]] std::string write_pickle(const PickleRef& root, int protocol);

}  // namespace mugv
