#include "interop/pickle.h"

#include "core/pickle_opcodes.h"

#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace mugv {
namespace {

using namespace pickle_op;  // opcode names (core/pickle_opcodes.h)

PickleRef make(PickleKind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

std::string opcode_text(uint8_t op) {
  char buf[32];
  if (op >= 0x20 && op < 0x7f)
    std::snprintf(buf, sizeof buf, "0x%02x ('%c')", op, op);
  else
    std::snprintf(buf, sizeof buf, "0x%02x", op);
  return buf;
}

// The pickle machine. Each method reads its operands from `p_` and leaves the cursor after them.
class Parser {
  // Where each str key of a dict (or object) of more than kScannedEntries entries sits in them, to
  // replace a repeated key without a scan: by key_id(), so a long key set into many dicts is never copied.
  // Both maps hold their nodes.
  static constexpr size_t kScannedEntries = 8;
  static constexpr size_t kShortKey = 64;         // keys up to this long are compared by text when scanning
  static constexpr size_t kMaxGlobalText = 1024;  // a STACK_GLOBAL's module or name, in bytes
  struct DictIndex {
    PickleRef dict;
    std::unordered_map<uint64_t, size_t> at;  // key_id -> index in entries
  };
  struct KeyId {
    PickleRef key;
    uint64_t id = 0;
  };

 public:
  Parser(const uint8_t* data, size_t bytes, const std::string& subject)
      : data_(data), end_(data + bytes), p_(data), subject_(subject) {}

  PickleRef run() {
    try {
      while (p_ < end_) {
        op_at_ = size_t(p_ - data_);
        const uint8_t op = *p_++;
        op_ = op;
        if (op == STOP) {
          if (stack_.empty()) fail("STOP with an empty stack");
          if (has_cycle())
            fail("a value contains itself (a reference cycle), which no checkpoint writer makes");
          return stack_.back();
        }
        step(op);
      }
      throw Error(
          ErrorCode::format, subject_,
          "pickle ends at byte " + std::to_string(size_t(end_ - data_)) + " without STOP (truncated?)");
    } catch (...) {
      break_cycles();
      throw;
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::format, subject_,
                "pickle byte " + std::to_string(op_at_) + ", opcode " + opcode_text(op_) + ": " + what);
  }

  const uint8_t* take(uint64_t n) {
    if (uint64_t(end_ - p_) < n)
      fail("needs " + std::to_string(n) + " bytes of operand, " + std::to_string(size_t(end_ - p_)) +
           " left (truncated?)");
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  uint64_t read_le(int n) {
    const uint8_t* b = take(uint64_t(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string read_line() {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl) fail("line operand without a newline (truncated?)");
    std::string line(reinterpret_cast<const char*>(p_), size_t(nl - p_));
    p_ = nl + 1;
    return line;
  }

  void push(PickleRef v) { stack_.push_back(std::move(v)); }

  // Only APPEND(S), SETITEM(S), ADDITEMS and BUILD add a value to one that already exists; every other
  // opcode builds a new value from older ones. So every reference cycle runs through a value changed by one
  // of them, and these are remembered to look for cycles at STOP and to break them when the parse fails:
  // values holding themselves would never be freed (shared_ptr), so a hostile file would leak at each read.
  PickleRef& changing_top() {
    PickleRef& target = top();
    if (changed_seen_.insert(target.get()).second) changed_.push_back(target);
    return target;
  }
  bool has_cycle() const {
    enum class Mark { open, done };
    std::unordered_map<const PickleValue*, Mark> marks;
    std::vector<std::pair<const PickleValue*, size_t>> path;  // a value and how many children were visited
    for (const PickleRef& start : changed_) {
      if (!marks.emplace(start.get(), Mark::open).second) continue;
      path.emplace_back(start.get(), 0);
      while (!path.empty()) {
        const PickleValue* child = nullptr;
        if (!child_at(*path.back().first, path.back().second++, &child)) {
          marks[path.back().first] = Mark::done;
          path.pop_back();
          continue;
        }
        if (!child) continue;
        const auto [it, fresh] = marks.emplace(child, Mark::open);
        if (!fresh) {
          if (it->second == Mark::open) return true;  // back on the current path
          continue;
        }
        path.emplace_back(child, 0);
      }
    }
    return false;
  }
  // Sets `child` to the i-th value `v` refers to (nullptr for an empty slot); false past the last one.
  static bool child_at(const PickleValue& v, size_t i, const PickleValue** child) {
    if (i < v.items.size()) {
      *child = v.items[i].get();
      return true;
    }
    i -= v.items.size();
    if (i < 2 * v.entries.size()) {
      *child = (i % 2 ? v.entries[i / 2].second : v.entries[i / 2].first).get();
      return true;
    }
    i -= 2 * v.entries.size();
    const PickleRef* const rest[] = {&v.args.tuple(), &v.callable, &v.kwargs, &v.state, &v.pid};
    if (i >= std::size(rest)) return false;
    *child = rest[i]->get();
    return true;
  }
  // Drops what was added to existing values: every cycle loses an edge, so everything is freed.
  void break_cycles() {
    for (const PickleRef& v : changed_) {
      v->items.clear();
      v->entries.clear();
      v->state.reset();
    }
  }

  PickleRef pop() {
    if (stack_.size() <= floor()) fail("stack underflow");
    PickleRef v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  PickleRef& top() {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  // Values above the innermost MARK may be popped; below it they belong to an outer frame.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<PickleRef> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t at = marks_.back();
    marks_.pop_back();
    std::vector<PickleRef> items(std::make_move_iterator(stack_.begin() + long(at)),
                                 std::make_move_iterator(stack_.end()));
    stack_.resize(at);
    return items;
  }

  void memo_put(uint64_t index) { memo_[index] = top(); }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    push(it->second);
  }

  PickleRef text_value(PickleKind kind, uint64_t n) {
    const uint8_t* b = take(n);
    auto v = make(kind);
    v->text.assign(reinterpret_cast<const char*>(b), size_t(n));
    return v;
  }

  // Two's complement little-endian, as pickle's LONG opcodes store ints.
  PickleRef long_value(uint64_t n) {
    if (n > 8)
      throw Error(ErrorCode::unsupported, subject_,
                  "pickle byte " + std::to_string(op_at_) + ": integer of " + std::to_string(n) +
                      " bytes is wider than 64 bits");
    const uint8_t* b = take(n);
    uint64_t v = 0;
    for (uint64_t i = 0; i < n; ++i) v |= uint64_t(b[i]) << (8 * i);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);
    auto r = make(PickleKind::integer);
    r->integer = int64_t(v);
    return r;
  }

  PickleRef int_value(int64_t i) {
    auto v = make(PickleKind::integer);
    v->integer = i;
    return v;
  }

  PickleRef sequence(PickleKind kind, std::vector<PickleRef> items) {
    auto v = make(kind);
    v->items = std::move(items);
    return v;
  }

  // The tuple is shared, not copied: a memoized tuple of millions of items reused by every REDUCE costs
  // nothing per use. Tuples never change once built, so sharing one is safe.
  PickleRef object(PickleRef callable, PickleRef args, PickleCall call) {
    if (!args->is(PickleKind::tuple)) fail("arguments are " + args->describe() + ", not a tuple");
    auto v = make(PickleKind::object);
    v->callable = std::move(callable);
    v->args = PickleArgs(std::move(args));
    v->call = call;
    return v;
  }

  void append_to(PickleValue& target, std::vector<PickleRef> items) {
    if (!target.is(PickleKind::list) && !target.is(PickleKind::object))
      fail("appending to " + target.describe() + ", not a list");
    for (auto& item : items) target.items.push_back(std::move(item));
  }
  // A number standing for the text of a str key: equal texts, equal numbers. Each str node is hashed once
  // however many dicts it is set into, and is held (with its text) for the rest of the parse.
  uint64_t key_id(const PickleRef& key) {
    auto it = key_ids_.find(key.get());
    if (it != key_ids_.end()) return it->second.id;
    const auto [at, fresh] = interned_.emplace(std::string_view(key->text), interned_.size());
    (void)fresh;
    key_ids_.emplace(key.get(), KeyId{key, at->second});
    return at->second;
  }

  // Where the str key `key` sits in `target`'s entries; npos when it is not there. A long key is compared
  // by key_id(), so however often it is set, its text is hashed once and never compared again.
  size_t find_key(const PickleValue& target, const PickleRef& key, const DictIndex* index) {
    if (index) {
      auto it = index->at.find(key_id(key));
      return it == index->at.end() ? std::string::npos : it->second;
    }
    const size_t n = key->text.size();
    for (size_t j = 0; j < target.entries.size(); ++j) {
      const PickleRef& k = target.entries[j].first;
      if (k == key) return j;
      if (!k->is(PickleKind::string) || k->text.size() != n) continue;
      if (n <= kShortKey ? k->text == key->text : key_id(k) == key_id(key)) return j;
    }
    return std::string::npos;
  }

  DictIndex* make_index(const PickleRef& target) {
    DictIndex& index = dict_index_[target.get()];
    // Held while the parse runs, so no other dict can take this address and meet a stale index.
    index.dict = target;
    for (size_t j = 0; j < target->entries.size(); ++j)
      if (target->entries[j].first->is(PickleKind::string))
        index.at.emplace(key_id(target->entries[j].first), j);
    return &index;
  }

  void set_items(const PickleRef& target_ref, std::vector<PickleRef> flat) {
    PickleValue& target = *target_ref;
    if (!target.is(PickleKind::dict) && !target.is(PickleKind::object))
      fail("setting items of " + target.describe() + ", not a dict");
    if (flat.size() % 2 != 0) fail("odd number of values for key/value pairs");
    // Small dicts (most of them: dataclass states) are scanned; larger ones get an index.
    auto found = dict_index_.find(&target);
    DictIndex* index = found == dict_index_.end() ? nullptr : &found->second;
    for (size_t i = 0; i < flat.size(); i += 2) {
      const PickleRef& key = flat[i];
      // A repeated str key replaces the earlier value, as in a Python dict.
      if (key->is(PickleKind::string)) {
        const size_t at = find_key(target, key, index);
        if (at != std::string::npos) {
          target.entries[at].second = flat[i + 1];
          continue;
        }
      }
      target.entries.emplace_back(key, flat[i + 1]);
      if (index) {
        if (key->is(PickleKind::string)) index->at.emplace(key_id(key), target.entries.size() - 1);
      } else if (target.entries.size() > kScannedEntries) {
        index = make_index(target_ref);
      }
    }
  }

  void step(uint8_t op) {
    switch (op) {
      case PROTO: {
        const auto version = read_le(1);
        if (version > 5)
          throw Error(ErrorCode::unsupported, subject_,
                      "pickle byte " + std::to_string(op_at_) + ": protocol " + std::to_string(version) +
                          " (protocols up to 5 are read)");
        return;
      }
      case FRAME: {
        // The frame length only helps streaming readers; the whole stream is in memory here.
        const uint64_t n = read_le(8);
        if (n > uint64_t(end_ - p_)) fail("frame of " + std::to_string(n) + " bytes runs past the end");
        return;
      }
      case MARK:
        marks_.push_back(stack_.size());
        return;
      case POP:
        pop();
        return;
      case POP_MARK:
        pop_mark();
        return;
      case DUP:
        push(top());
        return;
      case NONE:
        push(make(PickleKind::none));
        return;
      case NEWTRUE:
      case NEWFALSE: {
        auto v = make(PickleKind::boolean);
        v->boolean = op == NEWTRUE;
        push(v);
        return;
      }
      case BININT:
        push(int_value(int64_t(int32_t(uint32_t(read_le(4))))));
        return;
      case BININT1:
        push(int_value(int64_t(read_le(1))));
        return;
      case BININT2:
        push(int_value(int64_t(read_le(2))));
        return;
      case LONG1:
        push(long_value(read_le(1)));
        return;
      case LONG4:
        push(long_value(read_le(4)));
        return;
      case BINFLOAT: {
        // The one big-endian operand in pickle.
        const uint8_t* b = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
        auto v = make(PickleKind::floating);
        std::memcpy(&v->floating, &bits, sizeof bits);
        push(v);
        return;
      }
      case BINUNICODE:
        push(text_value(PickleKind::string, read_le(4)));
        return;
      case SHORT_BINUNICODE:
        push(text_value(PickleKind::string, read_le(1)));
        return;
      case BINUNICODE8:
        push(text_value(PickleKind::string, read_le(8)));
        return;
      case BINSTRING:
        push(text_value(PickleKind::string, uint64_t(uint32_t(int32_t(read_le(4))))));
        return;
      case SHORT_BINSTRING:
        push(text_value(PickleKind::string, read_le(1)));
        return;
      case SHORT_BINBYTES:
        push(text_value(PickleKind::bytes, read_le(1)));
        return;
      case BINBYTES:
        push(text_value(PickleKind::bytes, read_le(4)));
        return;
      case BINBYTES8:
      case BYTEARRAY8:
        push(text_value(PickleKind::bytes, read_le(8)));
        return;
      case EMPTY_TUPLE:
        push(sequence(PickleKind::tuple, {}));
        return;
      case TUPLE:
        push(sequence(PickleKind::tuple, pop_mark()));
        return;
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        const size_t n = size_t(op - TUPLE1) + 1;
        std::vector<PickleRef> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop();
        push(sequence(PickleKind::tuple, std::move(items)));
        return;
      }
      case EMPTY_LIST:
        push(sequence(PickleKind::list, {}));
        return;
      case LIST:
        push(sequence(PickleKind::list, pop_mark()));
        return;
      case APPEND: {
        PickleRef item = pop();
        append_to(*changing_top(), {std::move(item)});
        return;
      }
      case APPENDS: {
        auto items = pop_mark();
        append_to(*changing_top(), std::move(items));
        return;
      }
      case EMPTY_DICT:
        push(make(PickleKind::dict));
        return;
      case DICT: {
        auto d = make(PickleKind::dict);
        set_items(d, pop_mark());
        push(d);
        return;
      }
      case SETITEM: {
        PickleRef value = pop();
        PickleRef key = pop();
        set_items(changing_top(), {std::move(key), std::move(value)});
        return;
      }
      case SETITEMS: {
        auto flat = pop_mark();
        set_items(changing_top(), std::move(flat));
        return;
      }
      case EMPTY_SET:
        push(sequence(PickleKind::set, {}));
        return;
      case ADDITEMS: {
        auto items = pop_mark();
        PickleValue& set = *changing_top();
        if (!set.is(PickleKind::set)) fail("adding items to " + set.describe() + ", not a set");
        for (auto& item : items) set.items.push_back(std::move(item));
        return;
      }
      case FROZENSET:
        push(sequence(PickleKind::frozenset, pop_mark()));
        return;
      case GLOBAL: {
        auto v = make(PickleKind::global);
        v->text = read_line();
        v->name = read_line();
        push(v);
        return;
      }
      case STACK_GLOBAL: {
        PickleRef name = pop();
        PickleRef module = pop();
        if (!module->is(PickleKind::string) || !name->is(PickleKind::string))
          fail("module and name are " + module->describe() + " and " + name->describe() + ", not strings");
        // The global copies both texts, so they are bounded, and the same module and name give the same
        // global (as find_class gives the same class): memoized strings reused cost nothing per use.
        if (module->text.size() > kMaxGlobalText || name->text.size() > kMaxGlobalText)
          fail("module or name longer than " + std::to_string(kMaxGlobalText) + " bytes (" +
               std::to_string(module->text.size()) + " and " + std::to_string(name->text.size()) +
               "): not a class reference");
        PickleRef& v = globals_[{key_id(module), key_id(name)}];
        if (!v) {
          v = make(PickleKind::global);
          v->text = module->text;
          v->name = name->text;
        }
        push(v);
        return;
      }
      case REDUCE: {
        PickleRef args = pop();
        PickleRef callable = pop();
        push(object(std::move(callable), std::move(args), PickleCall::reduce));
        return;
      }
      case NEWOBJ: {
        PickleRef args = pop();
        PickleRef cls = pop();
        push(object(std::move(cls), std::move(args), PickleCall::newobj));
        return;
      }
      case NEWOBJ_EX: {
        PickleRef kwargs = pop();
        PickleRef args = pop();
        PickleRef cls = pop();
        if (!kwargs->is(PickleKind::dict))
          fail("keyword arguments are " + kwargs->describe() + ", not a dict");
        auto v = object(std::move(cls), std::move(args), PickleCall::newobj_ex);
        v->kwargs = std::move(kwargs);
        push(v);
        return;
      }
      case BUILD: {
        PickleRef state = pop();
        PickleValue& target = *changing_top();
        if (!target.is(PickleKind::object)) fail("BUILD on " + target.describe() + ", not an object");
        if (target.state) fail("BUILD on an object that was already built");
        target.state = std::move(state);
        return;
      }
      case BINPERSID: {
        auto v = make(PickleKind::persistent);
        v->pid = pop();
        push(v);
        return;
      }
      case BINPUT:
        memo_put(read_le(1));
        return;
      case LONG_BINPUT:
        memo_put(read_le(4));
        return;
      case MEMOIZE:
        memo_put(memo_.size());
        return;
      case BINGET:
        memo_get(read_le(1));
        return;
      case LONG_BINGET:
        memo_get(read_le(4));
        return;
      default:
        throw Error(ErrorCode::unsupported, subject_,
                    "pickle byte " + std::to_string(op_at_) + ": opcode " + opcode_text(op) +
                        " is not read (protocol 0/1 text opcodes, out-of-band buffers and extension "
                        "codes are outside what torch.save and pickle.dump of checkpoint metadata write)");
    }
  }

  const uint8_t* data_;
  const uint8_t* end_;
  const uint8_t* p_;
  const std::string& subject_;
  size_t op_at_ = 0;
  uint8_t op_ = 0;
  std::vector<PickleRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleRef> memo_;
  // Where each str key of a dict (or object) of more than kScannedEntries entries sits in them, by
  // key_id(). Both maps hold their nodes.
  std::unordered_map<const PickleValue*, DictIndex> dict_index_;
  std::unordered_map<const PickleValue*, KeyId> key_ids_;
  std::unordered_map<std::string_view, uint64_t> interned_;     // views of the texts of key_ids_' nodes
  std::map<std::pair<uint64_t, uint64_t>, PickleRef> globals_;  // STACK_GLOBAL's, by key_id of module, name
  std::vector<PickleRef> changed_;                              // values APPEND, SETITEM, ... added to
  std::unordered_set<const PickleValue*> changed_seen_;
};

// ---------------------------------------------------------------------------------------------------------
// Writer

class Writer {
 public:
  explicit Writer(int protocol) : protocol_(protocol) {}

  std::string run(const PickleRef& root) {
    out_ += char(PROTO);
    out_ += char(protocol_);
    write(root, 0);
    out_ += char(STOP);
    return std::move(out_);
  }

 private:
  void op(uint8_t o) { out_ += char(o); }
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_ += char((v >> (8 * i)) & 0xff);
  }

  // Stores the value just written (the top of the unpickler's stack) in the memo.
  void memoize(const void* key) {
    const uint64_t index = memo_.size();
    memo_[key] = index;
    if (protocol_ >= 4) {
      op(MEMOIZE);
    } else if (index < 256) {
      op(BINPUT);
      le(index, 1);
    } else {
      op(LONG_BINPUT);
      le(index, 4);
    }
  }
  bool fetch(const void* key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return false;
    if (it->second < 256) {
      op(BINGET);
      le(it->second, 1);
    } else {
      op(LONG_BINGET);
      le(it->second, 4);
    }
    return true;
  }

  void write_int(int64_t v) {
    if (v >= 0 && v < 256) {
      op(BININT1);
      le(uint64_t(v), 1);
    } else if (v >= 0 && v < 65536) {
      op(BININT2);
      le(uint64_t(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op(BININT);
      le(uint64_t(uint32_t(int32_t(v))), 4);
    } else {
      // The shortest two's complement form, as pickle's encode_long.
      int n = 8;
      while (n > 1) {
        const int64_t shifted = v >> (8 * (n - 1) - 1);
        if (shifted != 0 && shifted != -1) break;
        --n;
      }
      op(LONG1);
      le(uint64_t(n), 1);
      le(uint64_t(v), n);
    }
  }

  void write_text(const std::string& s, bool is_bytes) {
    const uint64_t n = s.size();
    if (is_bytes) {
      if (protocol_ < 3) throw Error(ErrorCode::invalid_argument, "pickle protocol 2 cannot hold bytes");
      if (n < 256) {
        op(SHORT_BINBYTES);
        le(n, 1);
      } else if (n <= 0xffffffffu) {
        op(BINBYTES);
        le(n, 4);
      } else {
        op(BINBYTES8);
        le(n, 8);
      }
    } else if (protocol_ >= 4 && n < 256) {
      op(SHORT_BINUNICODE);
      le(n, 1);
    } else if (n <= 0xffffffffu) {
      op(BINUNICODE);
      le(n, 4);
    } else {
      if (protocol_ < 4)
        throw Error(ErrorCode::invalid_argument, "pickle protocol < 4 cannot hold a string over 4 GiB");
      op(BINUNICODE8);
      le(n, 8);
    }
    out_ += s;
  }

  void write_global(const PickleValue& g) {
    const std::string key = g.text + "\n" + g.name;
    auto it = globals_.find(key);
    if (it != globals_.end()) {
      if (fetch(it->second)) return;
    }
    if (protocol_ >= 4) {
      write_text(g.text, false);
      memoize(&g.text);
      write_text(g.name, false);
      memoize(&g.name);
      op(STACK_GLOBAL);
    } else {
      op(GLOBAL);
      out_ += g.text + "\n" + g.name + "\n";
    }
    globals_[key] = &g;
    memoize(&g);
  }

  void write_items(const std::vector<PickleRef>& items, int depth) {
    for (const auto& item : items) write(item, depth + 1);
  }

  void write_object(const PickleValue& v, int depth) {
    if (!v.callable) throw Error(ErrorCode::invalid_argument, "pickle object without a callable");
    write(v.callable, depth + 1);
    if (v.args.empty()) {
      op(EMPTY_TUPLE);
    } else {
      op(MARK);
      write_items(v.args.items(), depth);
      op(TUPLE);
    }
    switch (v.call) {
      case PickleCall::reduce:
        op(REDUCE);
        break;
      case PickleCall::newobj:
        op(NEWOBJ);
        break;
      case PickleCall::newobj_ex:
        if (protocol_ < 4) throw Error(ErrorCode::invalid_argument, "NEWOBJ_EX needs pickle protocol 4");
        // An object without keyword arguments gets an empty dict of its own, held until the end: the memo
        // is keyed by address, and a temporary freed here could hand its address to a later value.
        write(v.kwargs ? v.kwargs : temporaries_.emplace_back(make_dict({})), depth + 1);
        op(NEWOBJ_EX);
        break;
    }
    memoize(&v);
    // Python's save_reduce order: list items, dict items, then the state.
    if (!v.items.empty()) {
      op(MARK);
      write_items(v.items, depth);
      op(APPENDS);
    }
    if (!v.entries.empty()) {
      op(MARK);
      for (const auto& [k, val] : v.entries) {
        write(k, depth + 1);
        write(val, depth + 1);
      }
      op(SETITEMS);
    }
    if (v.state) {
      write(v.state, depth + 1);
      op(BUILD);
    }
  }

  void write(const PickleRef& ref, int depth) {
    if (!ref) throw Error(ErrorCode::invalid_argument, "pickle value tree holds a null reference");
    if (depth > 1000) throw Error(ErrorCode::invalid_argument, "pickle value tree deeper than 1000 levels");
    const PickleValue& v = *ref;
    // Scalars are written by value, as Python does for small ints and does not memoize.
    switch (v.kind) {
      case PickleKind::none:
        op(NONE);
        return;
      case PickleKind::boolean:
        op(v.boolean ? NEWTRUE : NEWFALSE);
        return;
      case PickleKind::integer:
        write_int(v.integer);
        return;
      case PickleKind::floating: {
        uint64_t bits = 0;
        std::memcpy(&bits, &v.floating, sizeof bits);
        op(BINFLOAT);
        for (int i = 7; i >= 0; --i) out_ += char((bits >> (8 * i)) & 0xff);
        return;
      }
      default:
        break;
    }
    if (fetch(&v)) return;
    switch (v.kind) {
      case PickleKind::string:
      case PickleKind::bytes:
        write_text(v.text, v.kind == PickleKind::bytes);
        memoize(&v);
        return;
      case PickleKind::tuple:
        if (v.items.empty()) {
          op(EMPTY_TUPLE);
          return;
        }
        if (v.items.size() <= 3) {
          write_items(v.items, depth);
          op(uint8_t(TUPLE1 + v.items.size() - 1));
        } else {
          op(MARK);
          write_items(v.items, depth);
          op(TUPLE);
        }
        memoize(&v);
        return;
      case PickleKind::list:
        op(EMPTY_LIST);
        memoize(&v);
        if (v.items.size() == 1) {
          write(v.items[0], depth + 1);
          op(APPEND);
        } else if (!v.items.empty()) {
          op(MARK);
          write_items(v.items, depth);
          op(APPENDS);
        }
        return;
      case PickleKind::dict:
        op(EMPTY_DICT);
        memoize(&v);
        if (v.entries.size() == 1) {
          write(v.entries[0].first, depth + 1);
          write(v.entries[0].second, depth + 1);
          op(SETITEM);
        } else if (!v.entries.empty()) {
          op(MARK);
          for (const auto& [k, val] : v.entries) {
            write(k, depth + 1);
            write(val, depth + 1);
          }
          op(SETITEMS);
        }
        return;
      case PickleKind::set:
      case PickleKind::frozenset:
        if (protocol_ < 4) throw Error(ErrorCode::invalid_argument, "pickle protocol < 4 cannot hold a set");
        if (v.kind == PickleKind::set) {
          op(EMPTY_SET);
          memoize(&v);
          if (!v.items.empty()) {
            op(MARK);
            write_items(v.items, depth);
            op(ADDITEMS);
          }
        } else {
          op(MARK);
          write_items(v.items, depth);
          op(FROZENSET);
          memoize(&v);
        }
        return;
      case PickleKind::global:
        write_global(v);
        return;
      case PickleKind::object:
        write_object(v, depth);
        return;
      case PickleKind::persistent:
        if (!v.pid) throw Error(ErrorCode::invalid_argument, "persistent value without an id");
        write(v.pid, depth + 1);
        op(BINPERSID);
        return;
      default:
        throw Error(ErrorCode::internal, "pickle writer: unhandled kind");
    }
  }

  int protocol_;
  std::string out_;
  std::unordered_map<const void*, uint64_t> memo_;
  std::unordered_map<std::string, const void*> globals_;
  std::vector<PickleRef> temporaries_;  // values made while writing, alive as long as memo_ may name them
};

}  // namespace

// Children are released with a work list rather than by recursion, so a deeply nested value (a hostile
// pickle can nest lists a million deep through the memo) cannot exhaust the stack when it is destroyed.
PickleValue::~PickleValue() {
  std::vector<PickleRef> pending;
  auto drain = [&pending](PickleValue& v) {
    auto keep = [&pending](PickleRef& r) {
      if (r) pending.push_back(std::move(r));
    };
    for (auto& item : v.items) keep(item);
    for (auto& [k, x] : v.entries) {
      keep(k);
      keep(x);
    }
    keep(v.args.tuple_);
    keep(v.callable);
    keep(v.kwargs);
    keep(v.state);
    keep(v.pid);
    v.items.clear();
    v.entries.clear();
  };
  drain(*this);
  while (!pending.empty()) {
    PickleRef next = std::move(pending.back());
    pending.pop_back();
    if (next.use_count() == 1) drain(*next);
  }
}

const char* to_string(PickleKind kind) {
  switch (kind) {
    case PickleKind::none:
      return "None";
    case PickleKind::boolean:
      return "bool";
    case PickleKind::integer:
      return "int";
    case PickleKind::floating:
      return "float";
    case PickleKind::string:
      return "str";
    case PickleKind::bytes:
      return "bytes";
    case PickleKind::tuple:
      return "tuple";
    case PickleKind::list:
      return "list";
    case PickleKind::dict:
      return "dict";
    case PickleKind::set:
      return "set";
    case PickleKind::frozenset:
      return "frozenset";
    case PickleKind::global:
      return "global";
    case PickleKind::object:
      return "object";
    case PickleKind::persistent:
      return "persistent id";
  }
  return "?";
}

bool PickleValue::is_global(std::string_view m, std::string_view n) const {
  return kind == PickleKind::global && text == m && name == n;
}

bool PickleValue::is_object_of(std::string_view n, std::string_view m) const {
  return kind == PickleKind::object && callable && callable->kind == PickleKind::global &&
         callable->name == n && (m.empty() || callable->text == m);
}

std::string PickleValue::class_name() const {
  if (kind == PickleKind::global) return text + "." + name;
  if (kind == PickleKind::object && callable && callable->kind == PickleKind::global)
    return callable->text + "." + callable->name;
  return {};
}

const PickleValue* PickleValue::find(std::string_view key) const {
  const PickleValue* dict = this;
  if (kind == PickleKind::object) dict = state.get();
  if (!dict || dict->kind != PickleKind::dict) return nullptr;
  for (const auto& [k, v] : dict->entries)
    if (k->kind == PickleKind::string && k->text == key) return v.get();
  return nullptr;
}

std::string PickleValue::describe() const {
  switch (kind) {
    case PickleKind::boolean:
      return boolean ? "True" : "False";
    case PickleKind::integer:
      return "int " + std::to_string(integer);
    case PickleKind::string:
      return "str '" + (text.size() > 40 ? text.substr(0, 40) + "..." : text) + "'";
    case PickleKind::bytes:
      return "bytes of " + std::to_string(text.size());
    case PickleKind::tuple:
    case PickleKind::list:
    case PickleKind::set:
    case PickleKind::frozenset:
      return std::string(to_string(kind)) + " of " + std::to_string(items.size());
    case PickleKind::dict:
      return "dict of " + std::to_string(entries.size());
    case PickleKind::global:
      return "global " + class_name();
    case PickleKind::object:
      return "object " + (class_name().empty() ? std::string("?") : class_name()) + "(...)";
    default:
      return to_string(kind);
  }
}

namespace {
[[noreturn]] void wrong_kind(const PickleValue& v, std::string_view what, const char* expected) {
  throw Error(ErrorCode::format, std::string(what) + " is " + v.describe() + ", not " + expected);
}
}  // namespace

int64_t PickleValue::as_int(std::string_view what) const {
  if (kind != PickleKind::integer) wrong_kind(*this, what, "an int");
  return integer;
}

bool PickleValue::as_bool(std::string_view what) const {
  if (kind != PickleKind::boolean) wrong_kind(*this, what, "a bool");
  return boolean;
}

const std::string& PickleValue::as_string(std::string_view what) const {
  if (kind != PickleKind::string) wrong_kind(*this, what, "a str");
  return text;
}

const std::vector<PickleRef>& PickleValue::as_sequence(std::string_view what) const {
  if (kind != PickleKind::tuple && kind != PickleKind::list) wrong_kind(*this, what, "a tuple or list");
  return items;
}

std::vector<int64_t> PickleValue::as_int_list(std::string_view what) const {
  const PickleValue* seq = this;
  // torch.Size pickles as REDUCE(torch.Size, (tuple_of_ints,)).
  if (is_object_of("Size", "torch")) {
    if (args.size() != 1) wrong_kind(*this, what, "torch.Size(tuple)");
    seq = args[0].get();
  }
  std::vector<int64_t> out;
  for (const auto& item : seq->as_sequence(what)) out.push_back(item->as_int(what));
  return out;
}

PickleRef make_none() {
  return make(PickleKind::none);
}
PickleRef make_bool(bool value) {
  auto v = make(PickleKind::boolean);
  v->boolean = value;
  return v;
}
PickleRef make_int(int64_t value) {
  auto v = make(PickleKind::integer);
  v->integer = value;
  return v;
}
PickleRef make_float(double value) {
  auto v = make(PickleKind::floating);
  v->floating = value;
  return v;
}
PickleRef make_string(std::string value) {
  auto v = make(PickleKind::string);
  v->text = std::move(value);
  return v;
}
PickleRef make_bytes(std::string value) {
  auto v = make(PickleKind::bytes);
  v->text = std::move(value);
  return v;
}
PickleRef make_tuple(std::vector<PickleRef> items) {
  auto v = make(PickleKind::tuple);
  v->items = std::move(items);
  return v;
}
PickleRef make_list(std::vector<PickleRef> items) {
  auto v = make(PickleKind::list);
  v->items = std::move(items);
  return v;
}
PickleRef make_dict(std::vector<std::pair<PickleRef, PickleRef>> entries) {
  auto v = make(PickleKind::dict);
  v->entries = std::move(entries);
  return v;
}
PickleRef make_global(std::string module, std::string name) {
  auto v = make(PickleKind::global);
  v->text = std::move(module);
  v->name = std::move(name);
  return v;
}
PickleRef make_reduce(PickleRef callable, std::vector<PickleRef> args, PickleRef state) {
  auto v = make(PickleKind::object);
  v->callable = std::move(callable);
  if (!args.empty()) v->args = PickleArgs(make_tuple(std::move(args)));
  v->state = std::move(state);
  v->call = PickleCall::reduce;
  return v;
}
PickleRef make_newobj(PickleRef cls, std::vector<PickleRef> args, PickleRef state) {
  auto v = make_reduce(std::move(cls), std::move(args), std::move(state));
  v->call = PickleCall::newobj;
  return v;
}
PickleRef make_persistent(PickleRef pid) {
  auto v = make(PickleKind::persistent);
  v->pid = std::move(pid);
  return v;
}

PickleRef parse_pickle(const uint8_t* data, size_t bytes, const std::string& subject) {
  return Parser(data, bytes, subject).run();
}

std::string write_pickle(const PickleRef& root, int protocol) {
  if (protocol < 2 || protocol > 5)
    throw Error(ErrorCode::invalid_argument,
                "pickle protocol " + std::to_string(protocol) + " (2 to 5 are written)");
  return Writer(protocol).run(root);
}

}  // namespace mugv
