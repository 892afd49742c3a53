#include "interop/pickle.h"

#include "core/error.h"
#include "interop/hand_assembly.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#if defined(__linux__)
#include <sys/resource.h>
#endif

using namespace mugv;
using mugv::test::PickleBytes;

namespace {

PickleRef parse(const std::string& bytes) {
  return parse_pickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl");
}

Error parse_error(const std::string& bytes) {
  return test::expect_error([&] { (void)parse(bytes); });
}

std::string str(const char* bytes, size_t n) {
  return std::string(bytes, n);
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// The process's peak resident memory so far, in bytes (0 where it is not known).
uint64_t peak_memory_bytes() {
#if defined(__linux__)
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) return uint64_t(usage.ru_maxrss) * 1024;  // kilobytes on Linux
#endif
  return 0;
}

}  // namespace

TEST_CASE("A hand-assembled protocol 2 pickle of an OrderedDict reads with its memo", "[unit][interop]") {
  // collections.OrderedDict() by REDUCE, then SETITEMS on that object: how torch.save writes one.
  PickleBytes p;
  p.proto(2).global("collections", "OrderedDict").binput(0).op(')').op('R').binput(1);
  p.mark().binunicode("weight").binput(2).binint(-7).binunicode("shape").mark().binint1(3).binint2(1000);
  p.long1(int64_t(1) << 40).op('t').binput(3).binunicode("again").binget(3).op('u').stop();
  const PickleRef root = parse(p.bytes);
  REQUIRE(root->is_object_of("OrderedDict", "collections"));
  REQUIRE(root->entries.size() == 3);
  CHECK(root->entries[0].first->text == "weight");
  CHECK(root->entries[0].second->as_int("weight") == -7);
  CHECK(root->entries[1].second->as_int_list("shape") == std::vector<int64_t>{3, 1000, int64_t(1) << 40});
  // BINGET gives the same object, not a copy.
  CHECK(root->entries[2].second == root->entries[1].second);
}

TEST_CASE("A hand-assembled protocol 4 pickle of a dataclass reads as an object with its state",
          "[unit][interop]") {
  // pickle.dumps(ChunkStorageMetadata(offsets=torch.Size([0, 4]), sizes=torch.Size([2, 4])), 4), with
  // its FRAME, MEMOIZE, STACK_GLOBAL and the memoized torch.Size class fetched back by BINGET.
  PickleBytes p;
  p.proto(4);
  p.stack_global("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata").op(')').op(0x81).memoize();
  p.op('}').memoize().mark();
  p.short_binunicode("offsets").memoize().stack_global("torch", "Size");
  p.binint1(0).binint1(4).op(0x86).memoize().op(0x85).memoize().op('R').memoize();
  p.short_binunicode("sizes").memoize().stack_global("torch", "Size");  // second time: BINGET
  p.binint1(2).binint1(4).op(0x86).memoize().op(0x85).memoize().op('R').memoize();
  p.op('u').op('b').stop();
  p.frame_after_proto();
  REQUIRE(p.bytes.find('h') != std::string::npos);
  const PickleRef root = parse(p.bytes);
  CHECK(root->class_name() == "torch.distributed.checkpoint.metadata.ChunkStorageMetadata");
  CHECK(root->call == PickleCall::newobj);
  REQUIRE(root->find("offsets"));
  CHECK(root->find("offsets")->as_int_list("offsets") == std::vector<int64_t>{0, 4});
  CHECK(root->find("sizes")->as_int_list("sizes") == std::vector<int64_t>{2, 4});
  CHECK(root->find("offsets")->callable == root->find("sizes")->callable);
}

TEST_CASE("Every scalar and container opcode of the accepted set reads", "[unit][interop]") {
  PickleBytes p;
  p.proto(4).mark();
  p.none().boolean(true).boolean(false).binfloat(3.0).long1(-5).short_binbytes(str("\x00\x01", 2));
  p.op(0x8f).memoize().mark().binint1(1).binint1(2).op(0x90);  // EMPTY_SET, ADDITEMS
  p.mark().binint1(9).op(0x91);                                // FROZENSET
  p.mark().binint1(1).binint1(2).op('l');                      // LIST
  p.mark().short_binunicode("k").binint1(5).op('d');           // DICT
  p.op(']').binint1(7).op('a');                                // EMPTY_LIST, APPEND
  p.short_binunicode("pid").op('Q');                           // BINPERSID
  p.binint1(1).op('0');                                        // POP
  p.mark().binint1(1).op('1');                                 // POP_MARK
  p.binint1(4).op('2').op(0x86);                               // DUP, TUPLE2
  p.op('t').stop();
  const PickleRef root = parse(p.bytes);
  const auto& v = root->as_sequence("root");
  REQUIRE(v.size() == 13);
  CHECK(v[0]->is(PickleKind::none));
  CHECK(v[1]->as_bool("") == true);
  CHECK(v[2]->as_bool("") == false);
  CHECK(v[3]->floating == 3.0);
  CHECK(v[4]->as_int("") == -5);
  CHECK(v[5]->is(PickleKind::bytes));
  CHECK(v[5]->text == str("\x00\x01", 2));
  CHECK((v[6]->is(PickleKind::set) && v[6]->items.size() == 2));
  CHECK((v[7]->is(PickleKind::frozenset) && v[7]->items.size() == 1));
  CHECK(v[8]->as_int_list("") == std::vector<int64_t>{1, 2});
  CHECK(v[9]->find("k")->as_int("") == 5);
  CHECK(v[10]->as_int_list("") == std::vector<int64_t>{7});
  REQUIRE(v[11]->is(PickleKind::persistent));
  CHECK(v[11]->pid->text == "pid");
  // POP and POP_MARK left nothing; DUP then TUPLE2 made (4, 4).
  CHECK(v[12]->as_int_list("") == std::vector<int64_t>{4, 4});
}

TEST_CASE("A key set twice in a dict keeps its first place and its last value", "[unit][interop]") {
  PickleBytes p;
  p.proto(2)
      .mark()
      .binunicode("a")
      .binint1(1)
      .binunicode("b")
      .binint1(2)
      .binunicode("a")
      .binint1(3)
      .op('d')
      .stop();
  const PickleRef root = parse(p.bytes);
  REQUIRE(root->entries.size() == 2);
  CHECK(root->entries[0].first->text == "a");
  CHECK(root->find("a")->as_int("a") == 3);
  CHECK(root->find("b")->as_int("b") == 2);
}

TEST_CASE("Repeated keys replace their value in small and large dicts, long keys as short ones",
          "[unit][interop]") {
  const std::string long_key(1000, 'x');
  for (int size : {3, 20}) {
    // {k0: 0, ..., k<size-1>: size-1, <long>: 1, <long>: 2 (another str of the same text), k1: 9}
    PickleBytes p;
    p.proto(2).mark();
    for (int i = 0; i < size; ++i) p.binunicode("k" + std::to_string(i)).binint1(uint8_t(i));
    p.binunicode(long_key).binint1(1).binunicode(long_key).binint1(2).binunicode("k1").binint1(9);
    p.op('d').stop();
    const PickleRef root = parse(p.bytes);
    INFO("size " << size);
    REQUIRE(root->entries.size() == size_t(size + 1));
    CHECK(root->find("k0")->as_int("k0") == 0);
    CHECK(root->find("k1")->as_int("k1") == 9);
    CHECK(root->entries[size_t(size)].first->text == long_key);
    CHECK(root->find(long_key)->as_int("long") == 2);
  }
}

TEST_CASE("The writer produces CPython's protocol 2 bytes, and protocol 4 without framing",
          "[unit][interop]") {
  // Expected bytes: CPython 3.11's pickle.dumps(value, protocol).hex().
  CHECK(hex(write_pickle(make_dict({{make_string("a"), make_int(1)}}), 2)) ==
        "80027d710058010000006171014b01732e");
  CHECK(hex(write_pickle(make_list({make_none()}), 2)) == "80025d71004e612e");
  CHECK(hex(write_pickle(make_tuple({make_int(1), make_int(-2), make_int(70000), make_int(int64_t(1) << 40),
                                     make_int(-(int64_t(1) << 40))}),
                         2)) == "8002284b014afeffffff4a701101008a060000000000018a060000000000ff7471002e");
  CHECK(hex(write_pickle(
            make_dict({{make_string("x"),
                        make_list({make_float(1.5), make_string("s"), make_bool(true), make_none()})}}),
            2)) == "80027d710058010000007871015d710228473ff80000000000005801000000737103884e65732e");
  // pickle.dumps({'a': 1}, 4) is 8004 950a00000000000000 7d948c0161944b01732e: the same without the
  // optional FRAME.
  CHECK(hex(write_pickle(make_dict({{make_string("a"), make_int(1)}}), 4)) == "80047d948c0161944b01732e");
}

TEST_CASE("Objects, globals and shared values survive a write and read in protocols 2 and 4",
          "[unit][interop]") {
  const PickleRef shared =
      make_reduce(make_global("torch", "Size"), {make_tuple({make_int(3), make_int(4)})});
  const PickleRef obj = make_newobj(
      make_global("argparse", "Namespace"), {},
      make_dict(
          {{make_string("a"), shared}, {make_string("b"), shared}, {make_string("c"), make_float(-0.25)}}));
  const PickleRef od = make_reduce(make_global("collections", "OrderedDict"), {});
  od->entries.emplace_back(make_string("k"),
                           make_persistent(make_tuple({make_string("storage"), make_int(1)})));
  const PickleRef root = make_list({obj, od, make_global("torch", "float32"), make_bytes("xyz")});
  for (int protocol : {3, 4, 5}) {
    const std::string bytes = write_pickle(root, protocol);
    const PickleRef back = parse(bytes);
    const auto& items = back->as_sequence("root");
    REQUIRE(items.size() == 4);
    CHECK(items[0]->class_name() == "argparse.Namespace");
    CHECK(items[0]->call == PickleCall::newobj);
    CHECK(items[0]->find("a")->as_int_list("a") == std::vector<int64_t>{3, 4});
    CHECK(items[0]->find("a") == items[0]->find("b"));  // written once, fetched from the memo
    CHECK(items[0]->find("c")->floating == -0.25);
    CHECK(items[1]->is_object_of("OrderedDict"));
    REQUIRE(items[1]->entries.size() == 1);
    CHECK(items[1]->entries[0].second->is(PickleKind::persistent));
    CHECK(items[2]->is_global("torch", "float32"));
    CHECK(items[3]->text == "xyz");
  }
  // Protocol 2 has no bytes opcode (Python goes through a reduce of _codecs.encode).
  CHECK(test::expect_error([&] { (void)write_pickle(root, 2); }).code() == ErrorCode::invalid_argument);
  CHECK(test::expect_error([&] { (void)write_pickle(root, 1); }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("Bad pickles are errors naming the stream, the byte and the opcode", "[unit][interop]") {
  SECTION("an opcode outside the set (protocol 0 INT)") {
    const Error e = parse_error(str("\x80\x02I12\n.", 7));
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK(e.subject() == "test.pkl");
    CHECK_THAT(e.message(), Catch::Contains("byte 2") && Catch::Contains("0x49 ('I')"));
  }
  SECTION("out-of-band buffers") {
    const Error e = parse_error(str("\x80\x05\x97.", 4));
    CHECK(e.code() == ErrorCode::unsupported);
    CHECK_THAT(e.message(), Catch::Contains("0x97"));
  }
  SECTION("a protocol above 5") {
    CHECK(parse_error(str("\x80\x06N.", 4)).code() == ErrorCode::unsupported);
  }
  SECTION("no STOP") {
    const Error e = parse_error(str("\x80\x02N", 3));
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("without STOP"));
  }
  SECTION("a truncated operand") {
    const Error e =
        parse_error(str("\x80\x02X\x10\x00\x00\x00"
                        "abc",
                        10));
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("byte 2") && Catch::Contains("truncated"));
  }
  SECTION("stack underflow") {
    CHECK_THAT(parse_error(str("\x80\x02R.", 4)).message(), Catch::Contains("underflow"));
  }
  SECTION("a memo entry never stored") {
    CHECK_THAT(parse_error(str("\x80\x02h\x05.", 5)).message(), Catch::Contains("memo entry 5"));
  }
  SECTION("BUILD on a list") {
    CHECK_THAT(parse_error(str("\x80\x02]Nb.", 6)).message(), Catch::Contains("not an object"));
  }
  SECTION("an integer wider than 64 bits") {
    CHECK(parse_error(str("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01"
                          ".",
                          14))
              .code() == ErrorCode::unsupported);
  }
}

TEST_CASE("A value that contains itself is refused and freed", "[unit][interop]") {
  // Python pickles cycles; no checkpoint writer makes them, and shared_ptr values holding themselves would
  // never be freed (the ASan build checks for leaks), so a hostile file would leak at every read.
  SECTION("a list appended to itself") {
    PickleBytes self;
    self.proto(2).op(']').binput(0).binget(0).op('a').stop();
    const Error e = parse_error(self.bytes);
    CHECK(e.code() == ErrorCode::format);
    CHECK_THAT(e.message(), Catch::Contains("contains itself"));
  }
  SECTION("a cycle through an object's state that the root does not reach") {
    // object o = REDUCE(global, ()); d = {}; d["o"] = o; BUILD o with d; then the root is None.
    PickleBytes hidden;
    hidden.proto(2).global("m", "C").op(')').op('R').binput(0).op('}').binput(1);
    hidden.binunicode("o").binget(0).op('s').op('b').op('0').none().stop();
    CHECK_THAT(parse_error(hidden.bytes).message(), Catch::Contains("contains itself"));
  }
  SECTION("a cycle in a stream that then fails is freed with the error") {
    PickleBytes broken;
    broken.proto(2).op(']').binput(0).binget(0).op('a').op('R');  // REDUCE: stack underflow, no STOP
    CHECK_THAT(parse_error(broken.bytes).message(), Catch::Contains("underflow"));
  }
  SECTION("a value reached twice without a cycle reads") {
    PickleBytes shared;
    shared.proto(2).op(']').binput(0).op(']').binput(1).binget(0).binget(0).op('\x86').op('a').stop();
    const PickleRef root = parse(shared.bytes);
    REQUIRE(root->items.size() == 1);
    CHECK(root->items[0]->items[0] == root->items[0]->items[1]);
  }
}

TEST_CASE("A pickle nesting lists a million deep through the memo is read and released", "[unit][interop]") {
  // With the stack at [outer]: EMPTY_LIST, BINPUT 1, APPEND (outer.append(inner)), POP, BINGET 1 leaves
  // [inner]; repeated, every list holds the next. Releasing such a chain must not recurse a million deep.
  PickleBytes deep;
  deep.proto(2).op(']').binput(0);
  for (int i = 0; i < 1000000; ++i) deep.op(']').binput(1).op('a').op('0').binget(1);
  deep.op('0').binget(0).stop();
  PickleRef root = parse(deep.bytes);
  int depth = 0;
  for (const PickleValue* v = root.get(); v && !v->items.empty(); v = v->items[0].get()) ++depth;
  CHECK(depth == 1000000);
  root.reset();
}

TEST_CASE("Memoized values reused many times are shared, not copied, so memory follows the stream's length",
          "[unit][interop]") {
  // An 8 MiB str key set into 128 dicts, and a tuple of a million items (one memoized None) given to 128
  // REDUCEs: 21 MB of pickle. Copied per use, they would take 1 GiB and 2 GiB.
  constexpr int kUses = 128;
  const std::string key(size_t(8) << 20, 'k');
  PickleBytes p;
  p.proto(2).mark();
  p.binunicode(key).binput(0).op('0');  // memo 0: the key
  p.none().binput(1).op('0');           // memo 1: None
  p.mark();
  for (int i = 0; i < 1000000; ++i) p.binget(1);
  p.op('t').binput(2).op('0');                                                      // memo 2: the tuple
  p.global("collections", "OrderedDict").binput(3).op('0');                         // memo 3: the callable
  for (int i = 0; i < kUses; ++i) p.op('}').binget(0).binint1(uint8_t(i)).op('s');  // {key: i}
  for (int i = 0; i < kUses; ++i) p.binget(3).binget(2).op('R');                    // OrderedDict(*tuple)
  p.op('l').stop();
  const uint64_t before = peak_memory_bytes();
  const PickleRef root = parse(p.bytes);
  const uint64_t grown = peak_memory_bytes() - before;
  const auto& items = root->as_sequence("root");
  REQUIRE(items.size() == size_t(2 * kUses));
  for (int i = 0; i < kUses; ++i) {
    const PickleValue& dict = *items[size_t(i)];
    REQUIRE(dict.entries.size() == 1);
    CHECK(dict.entries[0].first == items[0]->entries[0].first);
    CHECK(dict.entries[0].second->as_int("value") == i);
    const PickleValue& obj = *items[size_t(kUses + i)];
    REQUIRE(obj.args.size() == 1000000);
    // The same item vector for every object: the tuple itself, not a copy of it.
    CHECK(&obj.args[0] == &items[kUses]->args[0]);
  }
  // Well under one copy per use of either (the stream itself is 21 MB).
  CHECK(grown < (uint64_t(512) << 20));
  // STACK_GLOBAL copies its module and name into the global: they are bounded, and one module and name
  // make one global however often they are used.
  PickleBytes globals;
  globals.proto(4).mark().short_binunicode("torch").memoize().op('0');
  globals.short_binunicode("Size").memoize().op('0');
  for (int i = 0; i < 3; ++i) globals.binget(0).binget(1).op(0x93);
  globals.op('t').stop();
  const PickleRef g = parse(globals.bytes);
  REQUIRE(g->items.size() == 3);
  CHECK(g->items[0]->is_global("torch", "Size"));
  CHECK((g->items[1] == g->items[0] && g->items[2] == g->items[0]));
  PickleBytes long_module;
  long_module.proto(4).binunicode(std::string(2000, 'm')).short_binunicode("C").op(0x93).stop();
  const Error e = parse_error(long_module.bytes);
  CHECK(e.code() == ErrorCode::format);
  CHECK_THAT(e.message(), Catch::Contains("longer than 1024 bytes"));
  // A key repeated in one dict still replaces its value there.
  PickleBytes twice;
  twice.proto(2).op('}').binunicode("k").binput(0).binint1(1).op('s').binget(0).binint1(2).op('s');
  twice.binunicode("k").binint1(3).op('s').stop();
  const PickleRef d = parse(twice.bytes);
  REQUIRE(d->entries.size() == 1);
  CHECK(d->find("k")->as_int("k") == 3);
}

TEST_CASE("Objects made by NEWOBJ_EX without keyword arguments are written with a dict each",
          "[unit][interop]") {
  // Each object's empty kwargs dict is made while writing; the memo is keyed by address, so one freed
  // early would hand its address to the next and that one would be written as a fetch of the first.
  std::vector<PickleRef> values;
  for (int i = 0; i < 6; ++i) {
    PickleRef obj =
        make_newobj(make_global("m", "C"), {make_int(i)}, make_dict({{make_string("i"), make_int(i)}}));
    obj->call = PickleCall::newobj_ex;
    values.push_back(obj);
    values.push_back(make_dict({{make_string("after"), make_int(i)}}));
  }
  PickleRef with_kwargs = make_newobj(make_global("m", "C"), {});
  with_kwargs->call = PickleCall::newobj_ex;
  with_kwargs->kwargs = make_dict({{make_string("x"), make_int(7)}});
  values.push_back(with_kwargs);
  for (int protocol : {4, 5}) {
    const PickleRef back = parse(write_pickle(make_list(values), protocol));
    const auto& items = back->as_sequence("root");
    REQUIRE(items.size() == 13);
    for (int i = 0; i < 6; ++i) {
      const PickleValue& obj = *items[size_t(2 * i)];
      CHECK(obj.call == PickleCall::newobj_ex);
      CHECK(obj.args[0]->as_int("arg") == i);
      CHECK(obj.find("i")->as_int("i") == i);
      REQUIRE(obj.kwargs);
      CHECK(obj.kwargs->is(PickleKind::dict));
      CHECK(obj.kwargs->entries.empty());
      // A dict of its own, as Python writes one per object.
      for (int j = 0; j < i; ++j) CHECK(obj.kwargs != items[size_t(2 * j)]->kwargs);
      CHECK(items[size_t(2 * i + 1)]->find("after")->as_int("after") == i);
    }
    CHECK(items[12]->kwargs->find("x")->as_int("x") == 7);
  }
}
